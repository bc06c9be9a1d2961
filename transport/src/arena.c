#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

struct tp_arena_block {
  struct tp_arena_block *next;
  size_t used, size;
  alignas(max_align_t) unsigned char data[];
};

#define MIN_BLOCK 1024u
#define ALIGN_UP(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

static struct tp_arena_block *add_block(struct tp_arena *a, size_t need) {
  size_t size = a->next_size > need ? a->next_size : need;
  if (size > SIZE_MAX / 2 - sizeof(struct tp_arena_block))
    return NULL; /* no message comes near; refuse rather than wrap */
  struct tp_arena_block *b = malloc(sizeof(*b) + size);
  if (b == NULL)
    return NULL;
  b->used = 0;
  b->size = size;
  b->next = a->blocks;
  a->blocks = b;
  a->next_size = size * 2;
  return b;
}

static void *arena_alloc(void *data, size_t size) {
  struct tp_arena *a = data;
  size_t need = ALIGN_UP(size ? size : 1);
  if (need < size)
    return NULL; /* overflow */
  struct tp_arena_block *b = a->blocks;
  if (b == NULL || b->size - b->used < need)
    b = add_block(a, need);
  if (b == NULL)
    return NULL;
  void *p = b->data + b->used;
  b->used += need;
  return p;
}

/* Memory goes back all at once, in tp_arena_release. */
static void arena_free(void *data, void *pointer) {
  (void)data;
  (void)pointer;
}

void tp_arena_init(struct tp_arena *arena, size_t size_hint) {
  arena->allocator = (ProtobufCAllocator){.alloc = arena_alloc, .free = arena_free,
                                          .allocator_data = arena};
  arena->blocks = NULL;
  arena->next_size = size_hint > MIN_BLOCK ? ALIGN_UP(size_hint) : MIN_BLOCK;
}

void tp_arena_release(struct tp_arena *arena) {
  struct tp_arena_block *b = arena->blocks;
  while (b != NULL) {
    struct tp_arena_block *next = b->next;
    free(b);
    b = next;
  }
  arena->blocks = NULL;
}
