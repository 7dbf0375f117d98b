"""The dynofa daemon: control loop, ZeroMQ server, inference path, systemd integration."""
