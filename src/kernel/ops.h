/* The kernel's own queries and the operations endpoints: liveness, readiness, metrics. */
#ifndef KERNEL_OPS_H
#define KERNEL_OPS_H

#include "kernel/bus.h"
#include "kernel/http_types.h"

/* "kernel.readiness": pings every dependency; replies {"status","checks":{...}}. */
extern const bus_handler_def ops_queries[];
/* GET /health/live, GET /health/ready, GET /metrics. */
extern const http_route_def ops_routes[];

#endif
