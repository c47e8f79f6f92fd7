/* Money, a shared-kernel value object: integer minor units and an ISO 4217 currency. */
#ifndef CORE_MONEY_H
#define CORE_MONEY_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#define MONEY_MAX_AMOUNT INT64_C(1000000000000) /* 10^12 minor units */

typedef struct money {
    int64_t amount;   /* minor units, 0..MONEY_MAX_AMOUNT */
    char currency[4]; /* ISO 4217 code, e.g. "EUR" */
} money;

/* True for an active ISO 4217 currency code (upper case). */
bool money_currency_valid(const char *code);

/* Reads {"amount","currency"} at obj[field]. Wrong JSON types are APP_EBADREQ, bad values
 * (negative, too large, not an integer, unknown currency) APP_EINVAL, with field errors
 * named "<field>.amount" / "<field>.currency". A missing field is APP_EINVAL "is required". */
int money_from_json(const cJSON *obj, const char *field, money *out, app_error *err);

/* {"amount","currency"}; owned by the caller, NULL when out of memory. */
cJSON *money_to_json(const money *m);

/* acc += m. APP_EINVAL on a currency mismatch or past MONEY_MAX_AMOUNT * 1000. An acc with
 * an empty currency takes m's. */
int money_add(money *acc, const money *m, app_error *err);

/* *out = m * n (n >= 0). APP_EINVAL on overflow past MONEY_MAX_AMOUNT * 1000. */
int money_mul(const money *m, int64_t n, money *out, app_error *err);

#endif
