/* Kafka topic readers for tests: a fresh group, every partition from its first offset. */
#include "test/support/kafka_reader.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "test/support/services.h"

rd_kafka_t *tk_reader_new(const char *brokers, const char *topic)
{
    char errstr[256], group[64];
    static int readers;
    snprintf(group, sizeof group, "test-reader-%d-%lld-%d", (int)getpid(), ts_now_ms(), readers++);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!c)
        fail_msg("cannot make a Kafka consumer: %s", errstr);
    rd_kafka_poll_set_consumer(c);

    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    bool exists = false;
    if (rd_kafka_metadata(c, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const struct rd_kafka_metadata_topic *t = &md->topics[0];
        exists = md->topic_cnt == 1 && t->err == RD_KAFKA_RESP_ERR_NO_ERROR && t->partition_cnt > 0;
        if (exists) {
            rd_kafka_topic_partition_list_t *parts =
                rd_kafka_topic_partition_list_new(t->partition_cnt);
            for (int p = 0; p < t->partition_cnt; p++)
                rd_kafka_topic_partition_list_add(parts, topic, t->partitions[p].id)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
            assert_int_equal(rd_kafka_assign(c, parts), 0);
            rd_kafka_topic_partition_list_destroy(parts);
        }
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    if (!exists) {
        tk_reader_free(c);
        return NULL;
    }
    return c;
}

void tk_reader_free(rd_kafka_t *c)
{
    if (!c)
        return;
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

void tk_header(const rd_kafka_message_t *m, const char *name, char *out, size_t size)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR)
        snprintf(out, size, "%.*s", (int)len, (const char *)v);
}
