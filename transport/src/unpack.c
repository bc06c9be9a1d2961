#include "unpack.h"

#include "evf/status.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* What one unpack allocates from, and whether an allocation failed; on its caller's stack. */
struct watch {
  ProtobufCAllocator *inner; /* NULL: malloc and free */
  bool failed;
};

static void *watch_alloc(void *data, size_t size) {
  struct watch *w = data;
  void *p = w->inner ? w->inner->alloc(w->inner->allocator_data, size) : malloc(size);
  if (p == NULL)
    w->failed = true;
  return p;
}

static void watch_free(void *data, void *pointer) {
  struct watch *w = data;
  if (w->inner)
    w->inner->free(w->inner->allocator_data, pointer);
  else
    free(pointer);
}

int tp_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *allocator,
              const uint8_t *data, size_t len, ProtobufCMessage **out) {
  struct watch w = {.inner = allocator};
  ProtobufCAllocator watched = {.alloc = watch_alloc, .free = watch_free, .allocator_data = &w};
  ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &watched, len, data);
  if (msg == NULL)
    return w.failed ? -ENOMEM : EVF_EINVAL;
  *out = msg;
  return 0;
}

int tp_unpack_event(const uint8_t *data, size_t len, Api__Event **out) {
  ProtobufCMessage *msg;
  int rc = tp_unpack(&api__event__descriptor, NULL, data, len, &msg);
  if (rc == EVF_EINVAL)
    return EVF_EINTERNAL; /* the server encoded every stored event: these bytes are damaged */
  if (rc == 0)
    *out = (Api__Event *)msg;
  return rc;
}
