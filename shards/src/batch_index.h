#ifndef SHARDS_BATCH_INDEX_H
#define SHARDS_BATCH_INDEX_H

/*
 * What a batch being prepared has already decided, before anything is
 * written: each stream it touches, with its length after the batch's
 * appends so far. (Its client-given ids are claimed: id_claims.h.) Owned by
 * one shard's loop; cleared for every batch.
 */

#include "name_table.h"
#include "records.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct batch_index;

struct batch_stream {
  struct name_key key;       /* the name is borrowed from the append that first touched
                                it, which stays alive until the batch is prepared */
  struct stream_record record;
  bool is_new;
};

struct batch_index *batch_index_create(void);
void batch_index_destroy(struct batch_index *index);
void batch_index_clear(struct batch_index *index);

/** The stream's entry, or NULL. hash: of the name (evf_hash_fnv1a64). */
struct batch_stream *batch_index_find_stream(struct batch_index *index, const char *name,
                                             size_t len, uint64_t hash);

/** Adds a stream (not present). Returns the entry, or NULL when out of memory. */
struct batch_stream *batch_index_add_stream(struct batch_index *index, const char *name,
                                            size_t len, uint64_t hash,
                                            const struct stream_record *record, bool is_new);

#endif
