/* Money: validated once at the edge, then added and multiplied without floating point. */
#include "core/money.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/text.h"

/* Sums may exceed one price but stay far below int64's range. */
#define MONEY_MAX_TOTAL (MONEY_MAX_AMOUNT * 1000)

/* Active ISO 4217 codes (sorted, for bsearch). */
static const char *const money_codes[] = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
};

static int money_code_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

bool money_currency_valid(const char *code)
{
    if (!code || strlen(code) != 3)
        return false;
    return bsearch(&code, money_codes, sizeof money_codes / sizeof money_codes[0],
                   sizeof money_codes[0], money_code_cmp) != NULL;
}

int money_from_json(const cJSON *obj, const char *field, money *out, app_error *err)
{
    char name[96];
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!m || cJSON_IsNull(m))
        return text_field_invalid(err, field, "is required");
    if (!cJSON_IsObject(m)) {
        app_error_set(err, APP_EBADREQ, "wrong JSON types");
        app_error_field(err, field, "must be an object with amount and currency");
        return APP_EBADREQ;
    }
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(m, "amount");
    const cJSON *currency = cJSON_GetObjectItemCaseSensitive(m, "currency");
    int rc = 0;
    snprintf(name, sizeof name, "%s.amount", field);
    if (!amount || cJSON_IsNull(amount)) {
        rc = text_field_invalid(err, name, "is required");
    } else if (!cJSON_IsNumber(amount)) {
        app_error_set(err, APP_EBADREQ, "wrong JSON types");
        app_error_field(err, name, "must be an integer");
        return APP_EBADREQ;
    } else {
        double v = amount->valuedouble;
        if (v != floor(v))
            rc = text_field_invalid(err, name, "must be a whole number of minor units");
        else if (v < 0 || v > (double)MONEY_MAX_AMOUNT)
            rc = text_field_invalid(err, name, "must be between 0 and %lld",
                                    (long long)MONEY_MAX_AMOUNT);
        else
            out->amount = (int64_t)v;
    }
    snprintf(name, sizeof name, "%s.currency", field);
    if (!currency || cJSON_IsNull(currency)) {
        rc = text_field_invalid(err, name, "is required");
    } else if (!cJSON_IsString(currency)) {
        app_error_set(err, APP_EBADREQ, "wrong JSON types");
        app_error_field(err, name, "must be a string");
        return APP_EBADREQ;
    } else if (json_string_has_nul(currency)) {
        rc = text_field_invalid(err, name, "must not contain U+0000");
    } else if (!money_currency_valid(currency->valuestring)) {
        rc = text_field_invalid(err, name, "must be an ISO 4217 currency code such as EUR");
    } else {
        memcpy(out->currency, currency->valuestring, 4);
    }
    return rc;
}

cJSON *money_to_json(const money *m)
{
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddNumberToObject(o, "amount", (double)m->amount) &&
        cJSON_AddStringToObject(o, "currency", m->currency))
        return o;
    cJSON_Delete(o);
    return NULL;
}

int money_add(money *acc, const money *m, app_error *err)
{
    if (acc->currency[0] == '\0')
        memcpy(acc->currency, m->currency, sizeof acc->currency);
    if (strcmp(acc->currency, m->currency) != 0)
        return app_error_set(err, APP_EINVAL, "cannot add %s to %s", m->currency, acc->currency);
    if (m->amount > MONEY_MAX_TOTAL - acc->amount)
        return app_error_set(err, APP_EINVAL, "amount too large");
    acc->amount += m->amount;
    return 0;
}

int money_mul(const money *m, int64_t n, money *out, app_error *err)
{
    if (n < 0 || (n > 0 && m->amount > MONEY_MAX_TOTAL / n))
        return app_error_set(err, APP_EINVAL, "amount too large");
    out->amount = m->amount * n;
    memcpy(out->currency, m->currency, sizeof out->currency);
    return 0;
}
