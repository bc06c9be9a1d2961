#ifndef TRANSPORT_ARENA_H
#define TRANSPORT_ARENA_H

/*
 * A bump allocator for decoding one request with protobuf-c: every field
 * the decoder allocates comes from a few blocks, all freed at once by
 * tp_arena_release(), instead of a malloc and a free per string, bytes
 * field, repeated array and sub-message (an append of 1000 events made
 * about 4000 of each).
 */

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct tp_arena_block;

struct tp_arena {
  ProtobufCAllocator allocator; /* pass &arena->allocator to protobuf-c */
  struct tp_arena_block *blocks;
  size_t next_size;             /* of the next block to allocate */
};

/** Prepares an empty arena; size_hint: roughly how much the first block should hold. */
void tp_arena_init(struct tp_arena *arena, size_t size_hint);

/** Frees everything allocated from the arena; it is empty (and usable) again. */
void tp_arena_release(struct tp_arena *arena);

#endif
