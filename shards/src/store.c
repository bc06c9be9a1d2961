/* Opening and closing a store: the data folder, its format file, threads. */
#include "internal.h"

#include "batch_index.h"
#include "evf/hash.h"
#include "evf/log.h"
#include "evf/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Streams per shard whose committed state the loop keeps: a few MiB with short names. */
#define STREAM_CACHE_STREAMS 65536

#define FORMAT_FILE "FORMAT"
#define OLDEST_FORMAT 1 /* upgraded in place at start-up (db.c) */

struct folder_format {
  unsigned version;
  unsigned shards;
  char hash[32];
};

static int lock_folder(const char *dir, int *fd_out, char *err, size_t err_len) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/LOCK", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
    return -errno;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    snprintf(err, err_len, "data folder %s is in use by another process", dir);
    return e == EWOULDBLOCK ? -EWOULDBLOCK : -e;
  }
  *fd_out = fd;
  return 0;
}

/* Reads DATA/FORMAT. Returns 0, -ENOENT when absent, or EVF_EFORMAT. */
static int read_format(const char *dir, struct folder_format *f, char *err, size_t err_len) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/" FORMAT_FILE, dir);
  FILE *file = fopen(path, "r");
  if (file == NULL)
    return errno == ENOENT ? -ENOENT : -errno;
  int fields = fscanf(file, "eventflowdb data folder\nformat %u\nshards %u\nhash %31s", &f->version,
                      &f->shards, f->hash);
  fclose(file);
  if (fields != 3 || f->shards == 0) {
    snprintf(err, err_len, "%s is damaged", path);
    return EVF_EFORMAT;
  }
  if (f->version < OLDEST_FORMAT || f->version > STORE_FORMAT ||
      strcmp(f->hash, EVF_STREAM_HASH_NAME) != 0) {
    snprintf(err, err_len,
             "%s has format %u with hash %s; this server reads formats %d to %d with hash %s",
             path, f->version, f->hash, OLDEST_FORMAT, STORE_FORMAT, EVF_STREAM_HASH_NAME);
    return EVF_EFORMAT;
  }
  return 0;
}

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* Writes DATA/FORMAT atomically: a temporary file, synced, renamed, folder synced. */
static int write_format(const char *dir, unsigned shards, char *err, size_t err_len) {
  char path[4200], tmp[4200];
  snprintf(path, sizeof(path), "%s/" FORMAT_FILE, dir);
  snprintf(tmp, sizeof(tmp), "%s/" FORMAT_FILE ".tmp", dir);
  FILE *file = fopen(tmp, "w");
  int rc = 0;
  if (file == NULL)
    rc = -errno;
  else {
    fprintf(file, "eventflowdb data folder\nformat %d\nshards %u\nhash %s\n", STORE_FORMAT,
            shards, EVF_STREAM_HASH_NAME);
    if (fflush(file) != 0 || fsync(fileno(file)) != 0)
      rc = -errno;
    if (fclose(file) != 0 && rc == 0)
      rc = -errno;
  }
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc == 0)
    rc = fsync_path(dir);
  if (rc != 0)
    snprintf(err, err_len, "cannot write %s: %s", path, strerror(-rc));
  return rc;
}

static unsigned online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

/* The shard count: recorded in the folder, or chosen and recorded now; and the folder's format. */
static int settle_shard_count(const struct store_options *o, unsigned *count, unsigned *version,
                              char *err, size_t err_len) {
  struct folder_format f;
  int rc = read_format(o->data_dir, &f, err, err_len);
  if (rc == -ENOENT) {
    *count = o->shards ? o->shards : online_cpus();
    *version = STORE_FORMAT;
    return write_format(o->data_dir, *count, err, err_len);
  }
  if (rc != 0) {
    if (err[0] == '\0')
      snprintf(err, err_len, "cannot read %s/" FORMAT_FILE ": %s", o->data_dir, strerror(-rc));
    return rc;
  }
  if (o->shards != 0 && o->shards != f.shards) {
    snprintf(err, err_len,
             "data folder %s has %u shards but SHARDS=%u; start with SHARDS=%u or unset, "
             "or re-shard offline",
             o->data_dir, f.shards, o->shards, f.shards);
    return EVF_EFORMAT;
  }
  *count = f.shards;
  *version = f.version;
  return 0;
}

static int alloc_rings(struct ring *rings, size_t count) {
  for (size_t i = 0; i < count; i++) {
    rings[i].buffer = calloc(REQ_RING_SIZE, sizeof(*rings[i].buffer));
    if (rings[i].buffer == NULL)
      return -ENOMEM;
    ck_ring_init(&rings[i].ring, REQ_RING_SIZE);
  }
  return 0;
}

static void free_rings(struct ring *rings, size_t count) {
  for (size_t i = 0; rings && i < count; i++)
    free(rings[i].buffer);
  free(rings);
}

static int alloc_store(struct evf_store *s) {
  size_t ring_count = (size_t)s->shard_count * s->port_count;
  s->shards = calloc(s->shard_count, sizeof(*s->shards));
  s->ports = calloc(s->port_count, sizeof(*s->ports));
  s->requests = calloc(ring_count, sizeof(*s->requests));
  s->replies = calloc(ring_count, sizeof(*s->replies));
  if (!s->shards || !s->ports || !s->requests || !s->replies)
    return -ENOMEM;
  int rc;
  if ((rc = alloc_rings(s->requests, ring_count)) != 0 ||
      (rc = alloc_rings(s->replies, ring_count)) != 0 ||
      (rc = id_claims_init(&s->id_claims, s->shard_count)) != 0)
    return rc;
  for (unsigned p = 0; p < s->port_count; p++) {
    if ((rc = port__init(&s->ports[p], s, p)) != 0)
      return rc;
  }
  for (unsigned i = 0; i < s->shard_count; i++) {
    struct shard *shard = &s->shards[i];
    shard->store = s;
    shard->index = i;
    shard->decided = batch_index_create();
    shard->streams = stream_cache_create(STREAM_CACHE_STREAMS);
    shard->reply_dirty = calloc(s->port_count, sizeof(bool));
    if (shard->decided == NULL || shard->streams == NULL || shard->reply_dirty == NULL)
      return -ENOMEM;
    if ((rc = waker_open(&shard->wake)) != 0)
      return rc;
  }
  return 0;
}

static void free_store(struct evf_store *s) {
  size_t ring_count = (size_t)s->shard_count * s->port_count;
  for (unsigned i = 0; s->shards && i < s->shard_count; i++) {
    batch_index_destroy(s->shards[i].decided);
    stream_cache_destroy(s->shards[i].streams);
    free(s->shards[i].reply_dirty);
    free(s->shards[i].held_ids);
    waker_destroy(&s->shards[i].wake); /* every thread that could send has ended */
  }
  for (unsigned p = 0; s->ports && p < s->port_count; p++)
    port__deinit(&s->ports[p]);
  free_rings(s->requests, ring_count);
  free_rings(s->replies, ring_count);
  id_claims_free(&s->id_claims);
  free(s->shards);
  free(s->ports);
  if (s->lock_fd >= 0)
    close(s->lock_fd);
  free(s);
}

/* One shard's opening, on a thread of its own: rebuilding an index takes a while. */
struct shard_opening {
  struct evf_store *store;
  unsigned index;
  uv_thread_t thread;
  bool threaded;
  int rc;
  uint64_t last_position;
  char err[4400];
};

static void open_shard(void *arg) {
  struct shard_opening *o = arg;
  struct evf_store *s = o->store;
  struct shard *shard = &s->shards[o->index];
  char path[4200];
  snprintf(path, sizeof(path), "%s/shard-%03u", s->options.data_dir, o->index);
  o->rc = db__open(&shard->db, path, &s->options, o->index, s->shard_count, o->err,
                   sizeof(o->err));
  if (o->rc != 0)
    return;
  if ((o->rc = db__last_position(&shard->db, &o->last_position)) != 0 ||
      (o->rc = index_db__next_stream_id(&shard->db, &shard->next_stream_id)) != 0) {
    snprintf(o->err, sizeof(o->err), "cannot read %s: %s", path, evf_strerror(o->rc));
    db__close(&shard->db);
    return;
  }
  shard->stored_next_stream_id = shard->next_stream_id;
}

/*
 * Opens every shard's environments, all at once (each may catch up or
 * rebuild its index); returns the highest stored position. On failure the
 * first failing shard's error is reported and every shard is closed again.
 */
static int open_shards(struct evf_store *s, uint64_t *last_position, char *err, size_t err_len) {
  struct shard_opening *openings = calloc(s->shard_count, sizeof(*openings));
  if (openings == NULL)
    return -ENOMEM;
  for (unsigned i = 0; i < s->shard_count; i++) {
    struct shard_opening *o = &openings[i];
    *o = (struct shard_opening){.store = s, .index = i};
    o->threaded = uv_thread_create(&o->thread, open_shard, o) == 0;
    if (!o->threaded)
      open_shard(o);
  }
  int rc = 0;
  *last_position = 0;
  for (unsigned i = 0; i < s->shard_count; i++) {
    struct shard_opening *o = &openings[i];
    if (o->threaded)
      uv_thread_join(&o->thread);
    if (o->rc != 0 && rc == 0) {
      rc = o->rc;
      snprintf(err, err_len, "%s", o->err);
    }
    if (o->last_position > *last_position)
      *last_position = o->last_position;
  }
  for (unsigned i = 0; rc != 0 && i < s->shard_count; i++) {
    if (openings[i].rc == 0)
      db__close(&s->shards[i].db);
  }
  free(openings);
  return rc;
}

static void close_shards(struct evf_store *s) {
  for (unsigned i = 0; i < s->shard_count; i++)
    db__close(&s->shards[i].db);
}

/* Stops the started shards; discards loops never run. */
static void stop_threads(struct evf_store *s, unsigned started) {
  atomic_store(&s->closing, true);
  store__wake_all(s);
  for (unsigned i = 0; i < s->shard_count; i++) {
    if (i < started)
      shard__join(&s->shards[i]);
    else
      shard__discard_loop(&s->shards[i]);
  }
}

static int start_threads(struct evf_store *s) {
  int rc = 0;
  unsigned started = 0;
  for (unsigned i = 0; i < s->shard_count; i++) {
    if ((rc = shard__init_loop(&s->shards[i])) != 0) {
      while (i-- > 0)
        shard__discard_loop(&s->shards[i]);
      return rc;
    }
    s->sequencer.shards[i].wake = &s->shards[i].wake;
  }
  while (started < s->shard_count && (rc = shard__start(&s->shards[started])) == 0)
    started++;
  if (rc != 0)
    stop_threads(s, started);
  return rc;
}

int store_open(const struct store_options *options, struct evf_store **out, char *err,
               size_t err_len) {
  err[0] = '\0';
  if (mkdir(options->data_dir, 0755) != 0 && errno != EEXIST) {
    snprintf(err, err_len, "cannot create data folder %s: %s", options->data_dir, strerror(errno));
    return -errno;
  }
  struct evf_store *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  s->options = *options;
  s->lock_fd = -1;
  uint64_t last_position;
  unsigned version = STORE_FORMAT;
  int rc = lock_folder(options->data_dir, &s->lock_fd, err, err_len);
  if (rc == 0)
    rc = settle_shard_count(options, &s->shard_count, &version, err, err_len);
  if (rc != 0) {
    free_store(s);
    return rc;
  }
  s->port_count = s->shard_count + options->external_ports;
  if ((rc = alloc_store(s)) != 0) {
    free_store(s);
    return rc;
  }
  /* Opening upgrades each shard of an older folder; the folder says so once all are. */
  if ((rc = open_shards(s, &last_position, err, err_len)) == 0 && version != STORE_FORMAT &&
      (rc = write_format(options->data_dir, s->shard_count, err, err_len)) != 0)
    close_shards(s);
  if (rc != 0) {
    free_store(s);
    return rc;
  }
  if ((rc = sequencer_init(&s->sequencer, s->shard_count, last_position)) != 0) {
    close_shards(s);
    free_store(s);
    return rc;
  }
  atomic_init(&s->closing, false);
  atomic_init(&s->outstanding, 0);
  *out = s;
  return 0;
}

void store_set_hooks(struct evf_store *s,
                     void (*on_start)(struct evf_store *, unsigned, uv_loop_t *, void *),
                     void (*on_stop)(struct evf_store *, unsigned, uv_loop_t *, void *),
                     void *arg) {
  s->options.on_shard_start = on_start;
  s->options.on_shard_stop = on_stop;
  s->options.hook_arg = arg;
}

int store_start(struct evf_store *s) {
  int rc = start_threads(s);
  s->started = rc == 0;
  return rc;
}

void store_close(struct evf_store *s) {
  if (s->started)
    stop_threads(s, s->shard_count);
  sequencer_deinit(&s->sequencer);
  close_shards(s);
  free_store(s);
}

unsigned store_shard_count(const struct evf_store *s) { return s->shard_count; }

uint64_t store_watermark(const struct evf_store *s) { return sequencer_watermark(&s->sequencer); }

void store_set_watermark_hook(struct evf_store *s,
                              void (*on_watermark)(struct evf_store *, unsigned, uint64_t, void *)) {
  s->options.on_watermark = on_watermark;
}

void store_watch_watermark(struct evf_store *s, unsigned shard, bool on) {
  struct shard *sh = &s->shards[shard];
  sh->watches_watermark = on;
  shard__update_watermark_watch(sh);
  /* seq_cst after the flag: a move published before it is seen here. */
  sh->watermark_seen = atomic_load(&s->sequencer.watermark);
}
