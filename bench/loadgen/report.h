#ifndef LOADGEN_REPORT_H
#define LOADGEN_REPORT_H

/* The results: a one-screen summary for people, every figure as JSON for scripts. */

#include "options.h"
#include "run.h"

#include <stdint.h>
#include <stdio.h>

struct lg_report {
  const struct lg_options *opt;
  const struct lg_result *result;   /* the measured run */
  const unsigned *weights;          /* the scenario's operation shares */
  uint64_t prefill_events;          /* written before the measured run (0: no prefill) */
  double prefill_s;
  uint64_t delivery_owed;           /* subscribe scenarios: events each subscriber must deliver */
  const char *failure;              /* why the run failed, or NULL */
  int exit_code;
};

/** Writes the summary. */
void lg_report_print(FILE *f, const struct lg_report *r);

/** Writes the JSON document to path. Returns 0 or -errno. */
int lg_report_json(const char *path, const struct lg_report *r);

/** Errors / requests that got an outcome (ok, conflicts, errors); 0 when none. */
double lg_report_error_rate(const struct lg_result *result);

#endif
