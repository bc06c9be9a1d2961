#ifndef TRANSPORT_LISTENER_H
#define TRANSPORT_LISTENER_H

/*
 * Listening sockets. The main thread binds one socket per shard on the same
 * port with SO_REUSEPORT (so a port in use is found before start-up ends);
 * each shard thread then listens on its own socket, and the kernel spreads
 * connections over them.
 */

#include <stdbool.h>
#include <uv.h>

/**
 * Whether nobody listens on the port (SO_REUSEPORT would otherwise let a
 * second server share it silently). Returns 0 or -EADDRINUSE (or -errno).
 */
int tp_listener_check_free(unsigned port);

/** Binds a TCP socket on [::]:port (or 0.0.0.0 without IPv6) with SO_REUSEPORT. Returns 0 or -errno. */
int tp_listener_bind(unsigned port, int *fd_out);

/**
 * Listens on a bound socket from the calling thread's loop; tcp takes the
 * socket. Returns 0 or a uv error, after which socket and handle are closed.
 */
int tp_listener_start(uv_tcp_t *tcp, uv_loop_t *loop, int fd, uv_connection_cb on_connection);

#endif
