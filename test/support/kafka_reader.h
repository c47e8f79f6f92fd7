/* Reading a topic of a Kafka broker from its beginning, for tests that check what the relay
 * wrote. Uses cmocka's assertions: a consumer that cannot be made fails the test. */
#ifndef TEST_SUPPORT_KAFKA_READER_H
#define TEST_SUPPORT_KAFKA_READER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

/* A consumer in a group of its own (it commits nothing) with every partition of topic
 * assigned at its beginning; NULL when the topic does not exist yet. Poll it with
 * rd_kafka_consumer_poll; free it with tk_reader_free. */
rd_kafka_t *tk_reader_new(const char *brokers, const char *topic);
void tk_reader_free(rd_kafka_t *c); /* accepts NULL */

/* The last value of header name of m into out (size bytes, "" when m has none). */
void tk_header(const rd_kafka_message_t *m, const char *name, char *out, size_t size);

#endif
