/*
 * A dynofa client in C with libzmq: the protocol is plain ZeroMQ multipart messages with
 * JSON headers and raw little-endian tensor bytes (docs/protocol.md), so any language works.
 *
 * Build:  cc -O2 -o dynofa_client dynofa_client.c $(pkg-config --cflags --libs libzmq)
 *         (add -lrt on glibc older than 2.34 for shm_open)
 * Run:    ./dynofa_client [-o accuracy|energy] [-s] ipc:///run/dynofa/control.sock my-app 32
 *
 * It registers APP with a 50 ms budget (with the given objective, else the daemon's default), runs one
 * inference on a 1x3xRxR float32 image with the tensor in a frame and prints the reply header and the
 * index of the largest output. With -s it then runs the same input on the same subnet through the shm
 * extension (docs/protocol.md: the tensors lie in a POSIX shared-memory file, no tensor byte crosses
 * the socket) and checks that the output equals the frame transport's bit for bit.
 * Exit status 0 on success.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zmq.h>

#define TIMEOUT_MS 20000

/* Send the frames of one request; receive the reply header into buf and an optional data frame. */
static int request(void *sock, const char *header, const void *data, size_t size, char *buf, size_t cap,
                   float *out, size_t out_cap, size_t *out_len) {
    if (zmq_send(sock, header, strlen(header), data ? ZMQ_SNDMORE : 0) < 0) return -1;
    if (data && zmq_send(sock, data, size, 0) < 0) return -1;
    int n = zmq_recv(sock, buf, cap - 1, 0);
    if (n < 0) return -1;
    buf[n < (int)cap - 1 ? n : (int)cap - 1] = '\0';
    *out_len = 0;
    int more = 0;
    size_t more_size = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_size);
    while (more) { /* the output tensor of an infer reply */
        int m = zmq_recv(sock, out, out_cap * sizeof(float), 0);
        if (m < 0) return -1;
        *out_len = (size_t)m / sizeof(float);
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_size);
    }
    return strstr(buf, "\"ok\":true") ? 0 : 1;
}

/* Copy the string value of "key":"..." in a reply header into out (names and ids never hold quotes). */
static int json_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *start = strstr(json, pattern);
    if (!start) return -1;
    start += strlen(pattern);
    const char *end = strchr(start, '"');
    if (!end || (size_t)(end - start) >= cap) return -1;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
    return 0;
}

/*
 * The shm transport: input at offset 0, output slot at the next 64-byte boundary. The name is unlinked
 * as soon as the daemon holds its descriptor, so nothing stays in /dev/shm if either side dies.
 */
static int infer_shm(void *sock, const char *app, int res, const float *image, const char *subnet,
                     const float *expected, size_t expected_len, char *reply, size_t cap) {
    size_t in_bytes = (size_t)3 * res * res * sizeof(float);
    size_t out_offset = (in_bytes + 63) & ~(size_t)63, out_bytes = 1024 * sizeof(float);
    size_t total = out_offset + out_bytes;
    char name[64], region[32], header[1024];
    float unused[1];
    size_t unused_len = 0;
    snprintf(name, sizeof name, "dynofa-c-%ld", (long)getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0) {
        perror("shm_open/ftruncate");
        if (fd >= 0) { close(fd); shm_unlink(name); }
        return 1;
    }
    unsigned char *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        close(fd);
        shm_unlink(name);
        return 1;
    }
    memcpy(map, image, in_bytes);
    memset(map + out_offset, 0xff, out_bytes); /* NaNs: a slot the daemon did not write cannot match */
    snprintf(header, sizeof header, "{\"v\":1,\"op\":\"shm_register\",\"app\":\"%s\",\"name\":\"%s\"}", app, name);
    int status = request(sock, header, NULL, 0, reply, cap, unused, 0, &unused_len);
    shm_unlink(name);
    printf("shm_register: %s\n", status < 0 ? zmq_strerror(zmq_errno()) : reply);
    if (status == 0 && json_string(reply, "region", region, sizeof region) != 0) status = 1;
    if (status == 0) {
        snprintf(header, sizeof header,
                 "{\"v\":1,\"op\":\"infer_shm\",\"id\":2,\"app\":\"%s\",\"region\":\"%s\",\"subnet\":\"%s\","
                 "\"input\":{\"offset\":0,\"dtype\":\"float32\",\"shape\":[1,3,%d,%d]},"
                 "\"output\":{\"offset\":%zu,\"bytes\":%zu}}",
                 app, region, subnet, res, res, out_offset, out_bytes);
        status = request(sock, header, NULL, 0, reply, cap, unused, 0, &unused_len);
        printf("infer_shm: %s\n", status < 0 ? zmq_strerror(zmq_errno()) : reply);
        if (status == 0) {
            int same = memcmp(map + out_offset, expected, expected_len * sizeof(float)) == 0;
            printf("shm output %s the frames output bit for bit\n", same ? "equals" : "DIFFERS FROM");
            if (!same) status = 1;
        }
        snprintf(header, sizeof header, "{\"v\":1,\"op\":\"shm_unregister\",\"app\":\"%s\",\"region\":\"%s\"}",
                 app, region);
        int released = request(sock, header, NULL, 0, reply, cap, unused, 0, &unused_len);
        printf("shm_unregister: %s\n", released < 0 ? zmq_strerror(zmq_errno()) : reply);
        if (status == 0) status = released;
    }
    munmap(map, total);
    close(fd);
    return status;
}

int main(int argc, char **argv) {
    const char *objective = NULL;
    int use_shm = 0, opt;
    while ((opt = getopt(argc, argv, "o:s")) != -1) {
        if (opt == 'o') objective = optarg;
        else if (opt == 's') use_shm = 1;
        else argc = 0;
    }
    if (argc - optind != 3) {
        fprintf(stderr, "usage: %s [-o accuracy|energy] [-s] ENDPOINT APP RESOLUTION\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[optind], *app = argv[optind + 1];
    if (objective && strcmp(objective, "accuracy") != 0 && strcmp(objective, "energy") != 0) {
        fprintf(stderr, "objective must be accuracy or energy\n");
        return 2;
    }
    int res = atoi(argv[optind + 2]);
    if (res < 8 || res > 1024) {
        fprintf(stderr, "resolution must be in [8, 1024]\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_REQ);
    int timeout = TIMEOUT_MS, linger = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    char header[512], reply[65536], subnet[256];
    float out[1024];
    size_t out_len = 0;
    int status = 0;

    char extra[64] = "";
    if (objective) snprintf(extra, sizeof extra, ",\"objective\":\"%s\"", objective);
    snprintf(header, sizeof header,
             "{\"v\":1,\"op\":\"register\",\"app\":\"%s\",\"budget\":{\"latency_ms\":50%s}}", app, extra);
    status = request(sock, header, NULL, 0, reply, sizeof reply, out, 1024, &out_len);
    printf("register: %s\n", status < 0 ? zmq_strerror(zmq_errno()) : reply);
    if (status != 0) goto done;

    size_t count = (size_t)3 * res * res;
    float *image = malloc(count * sizeof(float)); /* little-endian on every platform dynofa targets */
    for (size_t i = 0; i < count; i++) image[i] = (float)((i * 7919u) % 1000u) / 1000.0f;
    snprintf(header, sizeof header,
             "{\"v\":1,\"op\":\"infer\",\"id\":1,\"app\":\"%s\",\"dtype\":\"float32\",\"shape\":[1,3,%d,%d]}",
             app, res, res);
    status = request(sock, header, image, count * sizeof(float), reply, sizeof reply, out, 1024, &out_len);
    printf("infer: %s\n", status < 0 ? zmq_strerror(zmq_errno()) : reply);
    if (status == 0) {
        size_t best = 0;
        for (size_t i = 1; i < out_len; i++)
            if (out[i] > out[best]) best = i;
        printf("outputs: %zu, argmax: %zu\n", out_len, best);
    }
    if (status == 0 && use_shm) {
        status = json_string(reply, "subnet", subnet, sizeof subnet) == 0
                     ? infer_shm(sock, app, res, image, subnet, out, out_len, reply, sizeof reply)
                     : 1;
    }
    free(image);

done:
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return status == 0 ? 0 : 1;
}
