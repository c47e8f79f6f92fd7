/* The kernel's own queries and the operations endpoints: liveness, readiness, metrics. */
#ifndef KERNEL_OPS_H
#define KERNEL_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "kernel/bus.h"
#include "kernel/http_types.h"

/* "kernel.readiness": pings every dependency; replies {"status","checks":{...}}. */
extern const bus_handler_def ops_queries[];
/* GET /health/live, GET /health/ready, GET /metrics. */
extern const http_route_def ops_routes[];

/* A readiness check that can only report "degraded", never make /health/ready fail (the
 * Kafka relay: an outage must not take the service out of rotation). check returns true when
 * healthy, else writes why into detail. Set it after arg exists; clear it (check NULL)
 * before arg is freed: clearing waits for a readiness answer that is using it. */
typedef bool (*ops_soft_check_fn)(void *arg, char *detail, size_t size);
void ops_set_soft_check(const char *name, ops_soft_check_fn check, void *arg);

/* One informational section of the readiness answer (the subscribers' lag): report builds
 * it on every /health/ready and hands it over; NULL leaves the section out. It never changes
 * the status. Clear it (report NULL) before arg is freed. */
typedef cJSON *(*ops_report_fn)(void *arg);
void ops_set_report(const char *name, ops_report_fn report, void *arg);

#endif
