#ifndef TRANSPORT_HTTP2_H
#define TRANSPORT_HTTP2_H

/* The JSON API over HTTP/2 (h2c with prior knowledge): each stream is one exchange. */

#include "h2.h"

extern const struct tp_h2_protocol tp_http2_protocol;

#endif
