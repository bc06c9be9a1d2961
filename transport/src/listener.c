#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

/*
 * A dual-stack socket on [::] takes IPv4 and IPv6 clients alike; where the
 * kernel has no IPv6 (some containers), an IPv4 one on 0.0.0.0.
 */
static int open_socket(unsigned port, struct sockaddr_storage *addr, socklen_t *addr_len) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0) {
    int zero = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
    *a6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                .sin6_addr = in6addr_any};
    *addr_len = sizeof(*a6);
    return fd;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
  *a4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
  *addr_len = sizeof(*a4);
  return fd;
}

static int bind_socket(unsigned port, bool reuse_port, int *fd_out) {
  struct sockaddr_storage addr;
  socklen_t addr_len;
  int fd = open_socket(port, &addr, &addr_len);
  if (fd < 0)
    return -errno;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
      bind(fd, (struct sockaddr *)&addr, addr_len) != 0 ||
      listen(fd, LISTEN_BACKLOG) != 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  *fd_out = fd;
  return 0;
}

int tp_listener_check_free(unsigned port) {
  int fd = -1;
  int rc = bind_socket(port, false, &fd);
  if (rc == 0)
    close(fd);
  return rc;
}

int tp_listener_bind(unsigned port, int *fd_out) { return bind_socket(port, true, fd_out); }

int tp_listener_start(uv_tcp_t *tcp, uv_loop_t *loop, int fd, uv_connection_cb on_connection) {
  int rc = uv_tcp_init(loop, tcp);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  if ((rc = uv_tcp_open(tcp, fd)) != 0)
    close(fd);
  else
    rc = uv_listen((uv_stream_t *)tcp, LISTEN_BACKLOG, on_connection);
  if (rc != 0)
    uv_close((uv_handle_t *)tcp, NULL);
  return rc;
}
