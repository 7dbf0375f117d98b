/*
 * A dynofa client in C with libzmq: the protocol is plain ZeroMQ multipart messages with
 * JSON headers and raw little-endian tensor bytes (docs/protocol.md), so any language works.
 *
 * Build:  cc -O2 -o dynofa_client dynofa_client.c $(pkg-config --cflags --libs libzmq)
 * Run:    ./dynofa_client ipc:///run/dynofa/control.sock my-app 32 [accuracy|energy]
 *
 * It registers APP with a 50 ms budget (with the given objective, else the daemon's default), runs one inference on a 1x3xRxR float32 image and
 * prints the reply header and the index of the largest output. Exit status 0 on success.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINT APP RESOLUTION [accuracy|energy]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1], *app = argv[2];
    const char *objective = argc == 5 ? argv[4] : NULL;
    if (objective && strcmp(objective, "accuracy") != 0 && strcmp(objective, "energy") != 0) {
        fprintf(stderr, "objective must be accuracy or energy\n");
        return 2;
    }
    int res = atoi(argv[3]);
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
    char header[512], reply[65536];
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
    free(image);
    printf("infer: %s\n", status < 0 ? zmq_strerror(zmq_errno()) : reply);
    if (status == 0) {
        size_t best = 0;
        for (size_t i = 1; i < out_len; i++)
            if (out[i] > out[best]) best = i;
        printf("outputs: %zu, argmax: %zu\n", out_len, best);
    }

done:
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return status == 0 ? 0 : 1;
}
