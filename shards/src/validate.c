/* Input checks of an append, on the origin's thread, before it travels. */
#include "internal.h"
#include "records.h"

#include "evf/clock.h"
#include "evf/status.h"
#include "evf/utf8.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool store_stream_name_valid(const char *name, size_t len) {
  if (len == 0 || len > STORE_MAX_STREAM_NAME || !evf_utf8_valid(name, len))
    return false;
  if (name[0] == '$')
    return false;
  if ((len == 3 && memcmp(name, "all", 3) == 0) || (len == 5 && memcmp(name, "count", 5) == 0))
    return false;
  return true;
}

static bool type_valid(const char *type) {
  size_t len = strlen(type);
  return len > 0 && len <= STORE_MAX_EVENT_TYPE && evf_utf8_valid(type, len);
}

/* An optional UUID field: empty, or a valid UUID. */
static bool optional_uuid_valid(const char *text) {
  struct evf_uuid ignored;
  return text[0] == '\0' || evf_uuid_parse(text, strlen(text), &ignored) == 0;
}

static int invalid(struct store_append *req, const char *detail) {
  req->detail = detail;
  return EVF_EINVAL;
}

static int uuid_compare(const void *a, const void *b) { return memcmp(a, b, 16); }

static size_t client_id_count(const Api__AppendToStreamRequest *r) {
  size_t given = 0;
  for (size_t i = 0; i < r->n_events; i++)
    given += store__client_id(r, i);
  return given;
}

/* Two events of one append with the same client id: EVF_EINVAL. */
static int check_client_ids_distinct(struct store_append *req) {
  size_t given = client_id_count(req->request);
  if (given < 2)
    return 0; /* the common case: nothing to sort */
  struct evf_uuid *sorted = malloc(given * sizeof(*sorted));
  if (sorted == NULL)
    return -ENOMEM;
  for (size_t i = 0, j = 0; i < req->request->n_events; i++) {
    if (store__client_id(req->request, i))
      sorted[j++] = req->ids[i];
  }
  qsort(sorted, given, sizeof(*sorted), uuid_compare);
  bool distinct = true;
  for (size_t i = 1; i < given && distinct; i++)
    distinct = memcmp(&sorted[i - 1], &sorted[i], sizeof(*sorted)) != 0;
  free(sorted);
  return distinct ? 0 : invalid(req, "two events of one append have the same id");
}

/*
 * The size of an event of this append whole, as a read hands it over (not
 * in the short form it may be stored in), with the largest position and
 * version, less its type, data and metadata: the same for every event.
 */
static size_t stored_size_base(const Api__AppendToStreamRequest *request) {
  char id_text[EVF_UUID_TEXT_LEN + 1] = "00000000-0000-0000-0000-000000000000";
  Api__Event event = API__EVENT__INIT;
  event.id = id_text;
  event.stream = request->stream;
  event.version = UINT32_MAX;
  event.causation_id = id_text;
  event.correlation_id = id_text;
  event.added_at = INT64_MAX;
  event.position = UINT64_MAX;
  struct record_event_text text;
  return record_event_size(&event, &text);
}

static size_t stored_size(size_t base, const Api__EventData *e) {
  return base + record_bytes_field_size(strlen(e->type)) + record_bytes_field_size(e->data.len) +
         record_bytes_field_size(e->metadata.len);
}

static int validate_event(const struct store_options *options, struct store_append *req,
                          size_t base, const Api__EventData *e, struct evf_uuid *id) {
  if (!type_valid(e->type))
    return invalid(req, "an event type must be 1 to 200 bytes of UTF-8");
  if (!optional_uuid_valid(e->causation_id))
    return invalid(req, "causation_id must be a UUID (8-4-4-4-12 hex, not nil)");
  if (!optional_uuid_valid(e->correlation_id))
    return invalid(req, "correlation_id must be a UUID (8-4-4-4-12 hex, not nil)");
  if (e->id[0] != '\0' && evf_uuid_parse(e->id, strlen(e->id), id) != 0)
    return invalid(req, "an event id must be a UUID (8-4-4-4-12 hex, not nil)");
  if (options->max_event_size != 0 && stored_size(base, e) > options->max_event_size) {
    req->detail = "an event is larger than the largest that can be read back (MAX_MESSAGE_SIZE)";
    return EVF_ETOOBIG;
  }
  return 0;
}

/*
 * Ids for the events given none, at one clock read per append: a read for
 * each was 2.5% of the machine's time at 1000 events per call (perf).
 */
static void generate_ids(struct store_append *req) {
  int64_t now_ms = evf_now_ms();
  for (size_t i = 0; i < req->request->n_events; i++) {
    if (!store__client_id(req->request, i))
      evf_uuid_v7_at(&req->ids[i], now_ms);
  }
}

int validate__append(const struct store_options *options, struct store_append *req) {
  const Api__AppendToStreamRequest *r = req->request;
  if (r == NULL || r->n_events == 0)
    return invalid(req, "an append needs at least one event");
  if (r->version < -1)
    return invalid(req, "version must be -1 (any) or the expected stream length (>= 0)");
  if (!store_stream_name_valid(r->stream, strlen(r->stream)))
    return invalid(req, "a stream name must be 1 to 200 bytes of UTF-8, not all or count, "
                        "and not start with $");
  /* One event, the usual unary append: its id needs no allocation. */
  req->ids = r->n_events == 1 ? &req->single_id : malloc(r->n_events * sizeof(*req->ids));
  if (req->ids == NULL)
    return -ENOMEM;
  size_t base = stored_size_base(r);
  for (size_t i = 0; i < r->n_events; i++) {
    int rc = validate_event(options, req, base, r->events[i], &req->ids[i]);
    if (rc != 0)
      return rc;
  }
  generate_ids(req);
  return check_client_ids_distinct(req);
}
