/*
 * Preloaded (LD_PRELOAD) into the server by integration tests: HTTP/2
 * sends fail as they do out of memory (nghttp2_session_mem_send returns
 * NGHTTP2_ERR_NOMEM), so every connection's next send fails,
 *   - while the file EVF_FAIL_SENDS names exists, or
 *   - once the server has submitted EVF_FAIL_SENDS_AFTER_RESPONSES
 *     responses (nghttp2_submit_response), that one's send included.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <nghttp2/nghttp2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

typedef ssize_t (*mem_send_fn)(nghttp2_session *session, const uint8_t **data);
typedef int (*submit_response_fn)(nghttp2_session *session, int32_t stream_id,
                                  const nghttp2_nv *nva, size_t nvlen,
                                  const nghttp2_data_provider *data_prd);

static mem_send_fn real_mem_send;
static submit_response_fn real_submit_response;
static long responses_before_failing = -1; /* never, unless set */
static atomic_long responses;

/* Before main: the server's threads then only read these. */
__attribute__((constructor)) static void find_real_functions(void) {
  real_mem_send = (mem_send_fn)dlsym(RTLD_NEXT, "nghttp2_session_mem_send");
  real_submit_response = (submit_response_fn)dlsym(RTLD_NEXT, "nghttp2_submit_response");
  const char *after = getenv("EVF_FAIL_SENDS_AFTER_RESPONSES");
  if (after != NULL)
    responses_before_failing = atol(after);
}

static bool failing(void) {
  if (responses_before_failing >= 0 && atomic_load(&responses) >= responses_before_failing)
    return true;
  const char *flag = getenv("EVF_FAIL_SENDS");
  return flag != NULL && access(flag, F_OK) == 0;
}

int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva,
                            size_t nvlen, const nghttp2_data_provider *data_prd) {
  atomic_fetch_add(&responses, 1);
  return real_submit_response(session, stream_id, nva, nvlen, data_prd);
}

ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data) {
  return failing() ? NGHTTP2_ERR_NOMEM : real_mem_send(session, data);
}
