#ifndef TRANSPORT_METRICS_H
#define TRANSPORT_METRICS_H

/* Prometheus metrics: written by a helper (see the design comment in metrics.c). */

#endif
