#ifndef LOADGEN_DIAL_H
#define LOADGEN_DIAL_H

/*
 * Connecting a client connection's TCP handle within a time bound, for both
 * kinds of connection (grpc_conn.c, http_conn.c). The outcome comes once,
 * on the loop, through done: failure NULL when connected (TCP_NODELAY set),
 * else a message naming the authority. A connect refused at once is
 * reported from the loop too, like any other failure.
 */

#include <stdint.h>
#include <uv.h>

struct lg_dial {
  uv_connect_t req;
  uv_timer_t timer;
  int early_error;               /* uv_tcp_connect refused at once */
  const char *authority;         /* the owner's, for messages */
  uint64_t timeout_ns;
  void (*done)(struct lg_dial *dial, const char *failure);
  void *data;                    /* the owner */
};

/** Initializes the timer and starts connecting tcp (initialized by the caller) to addr. */
void lg_dial_start(struct lg_dial *dial, uv_loop_t *loop, uv_tcp_t *tcp,
                   const struct sockaddr *addr);

/** Closes the timer; cb gets it with data set to dial->data, as the owner's other handles. */
void lg_dial_close(struct lg_dial *dial, uv_close_cb cb);

#endif
