#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

static int bind_socket(unsigned port, bool reuse_port, int *fd_out) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
      bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
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
