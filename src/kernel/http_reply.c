/* Reply helpers shared by every context's routes. */
#include <stdio.h>

#include "kernel/http_types.h"

int http_res_versioned(http_res *res, int status, cJSON *body, app_error *err)
{
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(body, "version");
    if (!cJSON_IsNumber(version)) {
        cJSON_Delete(body);
        return app_error_set(err, APP_EINTERNAL, "reply without a version");
    }
    res->status = status;
    res->body = body;
    snprintf(res->etag, sizeof res->etag, "\"%lld\"", (long long)version->valuedouble);
    return 0;
}
