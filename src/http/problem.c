/* problem+json rendering: the only place an app_error becomes text for HTTP clients. */
#include "http/problem.h"

#include <cjson/cJSON.h>
#include <stdio.h>

char *http_problem_text(const app_error *err, int status, const char *slug, const char *title)
{
    char type[128];
    snprintf(type, sizeof type, "%s%s", HTTP_PROBLEM_TYPE_BASE,
             slug ? slug : app_error_slug(err->code));
    const char *detail = err->detail[0] ? err->detail : err->message;
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (!o || !cJSON_AddStringToObject(o, "type", type) ||
        !cJSON_AddStringToObject(o, "title", title ? title : app_error_title(err->code)) ||
        !cJSON_AddNumberToObject(o, "status", status))
        goto done;
    if (detail[0] && !cJSON_AddStringToObject(o, "detail", detail))
        goto done;
    if (err->n_fields > 0) {
        cJSON *errors = cJSON_AddArrayToObject(o, "errors");
        if (!errors)
            goto done;
        for (size_t i = 0; i < err->n_fields && i < APP_ERROR_MAX_FIELDS; i++) {
            cJSON *f = cJSON_CreateObject();
            if (!f)
                goto done;
            cJSON_AddItemToArray(errors, f);
            if (!cJSON_AddStringToObject(f, "field", err->fields[i].field) ||
                !cJSON_AddStringToObject(f, "message", err->fields[i].message))
                goto done;
        }
    }
    text = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    return text;
}
