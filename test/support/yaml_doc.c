/* YAML documents for tests (see yaml_doc.h). */
#include "test/support/yaml_doc.h"

#include <stdio.h>
#include <string.h>

int ty_load(const char *path, yaml_document_t *doc)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open it; run from the repository root\n", path);
        return -1;
    }
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int ok = yaml_parser_load(&parser, doc);
    fclose(f);
    if (!ok)
        fprintf(stderr, "%s: %s at line %zu\n", path, parser.problem ? parser.problem : "not YAML",
                parser.problem_mark.line + 1);
    yaml_parser_delete(&parser);
    if (ok && !yaml_document_get_root_node(doc)) {
        fprintf(stderr, "%s: empty\n", path);
        yaml_document_delete(doc);
        ok = 0;
    }
    return ok ? 0 : -1;
}

yaml_node_t *ty_get(yaml_document_t *doc, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}
