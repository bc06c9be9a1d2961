/*
 * Preloaded (LD_PRELOAD) into the server by an integration test: while the
 * file EVF_FAIL_SENDS names exists, nghttp2_session_mem_send fails as it
 * does out of memory, so every HTTP/2 connection's next send fails.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <unistd.h>

typedef ssize_t (*mem_send_fn)(nghttp2_session *session, const uint8_t **data);

static mem_send_fn real_mem_send;

/* Before main: the server's threads then only read it. */
__attribute__((constructor)) static void find_real_mem_send(void) {
  real_mem_send = (mem_send_fn)dlsym(RTLD_NEXT, "nghttp2_session_mem_send");
}

ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data) {
  const char *flag = getenv("EVF_FAIL_SENDS");
  if (flag != NULL && access(flag, F_OK) == 0)
    return NGHTTP2_ERR_NOMEM;
  return real_mem_send(session, data);
}
