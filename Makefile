# One binary, three bounded contexts. `make` builds ./app; `make test` runs every test
# under ASan and UBSan against private PostgreSQL and Redis instances; `make run` serves.

CC       ?= gcc
# `make V=1` shows whole command lines.
V        ?= 0
Q        := $(if $(filter 1,$(V)),,@)
PKGS     := libevent libevent_pthreads libpq hiredis libcjson yaml-0.1
STD      := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla -Wpointer-arith -Wundef -Wimplicit-fallthrough -Wcast-qual
INC      := -Isrc -I. -Ibuild/gen
LIBS     := -levent -levent_pthreads -lpq -lhiredis -lrdkafka -lcjson -lyaml -lpthread -lm

CFLAGS_RELEASE := $(STD) $(WARN) $(INC) -O2 -g -fno-omit-frame-pointer
CFLAGS_TEST    := $(STD) $(WARN) $(INC) -O1 -g -fno-omit-frame-pointer \
                  -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_TEST   := -fsanitize=address,undefined

CONTEXTS   := $(notdir $(wildcard contexts/*))
GEN_SRC    := $(foreach c,$(CONTEXTS),build/gen/$(c)_migrations.c) build/gen/pg_store_migrations.c \
              build/gen/pg_inbox_migrations.c
LIB_SRC    := $(filter-out src/main.c,$(shell find src adapters contexts -name '*.c' | sort)) $(GEN_SRC)
SUPPORT_SRC:= $(shell find test/support -name '*.c' 2>/dev/null | sort)
UNIT_SRC   := $(wildcard test/unit/test_*.c)
INTEG_SRC  := $(wildcard test/integration/test_*.c)
E2E_SRC    := $(wildcard test/e2e/test_*.c)
# Long runs, not part of `make test`: `make soak`, `make chaos`.
SOAK_SRC   := $(wildcard test/soak/test_*.c) $(wildcard test/chaos/test_*.c)
# The harness's checks of itself (must_fail_*, and the leaky stand-in app they start).
HARNESS_SRC:= $(wildcard test/harness/*.c)

REL_OBJ    := $(patsubst %.c,build/release/%.o,$(LIB_SRC))
TEST_OBJ   := $(patsubst %.c,build/test/%.o,$(LIB_SRC) $(SUPPORT_SRC))
TEST_BINS  := $(patsubst %.c,build/test/%,$(UNIT_SRC) $(INTEG_SRC) $(E2E_SRC) $(HARNESS_SRC) \
              $(SOAK_SRC))

# Generated sources are kept, not removed as intermediates between the two builds.
.SECONDARY: $(GEN_SRC)

.PHONY: all test test-build unit-test test-stress lint format clean run run-split bench migrations \
        fuzz fuzz-build soak chaos
all: app

app: build/release/src/main.o $(REL_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) -o $@ $^ $(LIBS)

build/test/app: build/test/src/main.o $(filter-out $(patsubst %.c,build/test/%.o,$(SUPPORT_SRC)),$(TEST_OBJ))
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_TEST) -o $@ $^ $(LIBS)

build/release/%.o: %.c $(GEN_SRC)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_RELEASE) -MMD -MP -c -o $@ $<

build/test/%.o: %.c $(GEN_SRC)
	@mkdir -p $(dir $@)
	@echo "  CC      $< (sanitized)"
	$(Q)$(CC) $(CFLAGS_TEST) -MMD -MP -c -o $@ $<

# Each test is one cmocka program linked with the whole kernel, adapters and contexts.
build/test/test/%: build/test/test/%.o $(TEST_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_TEST) -o $@ $^ $(LIBS) -lcmocka

# SQL migrations are compiled into the binary, one table per context.
build/gen/%_migrations.c: src/tools/embed_migrations.sh $(wildcard contexts/*/migrations/*.sql)
	@mkdir -p build/gen
	sh src/tools/embed_migrations.sh $* contexts/$*/migrations > $@

build/gen/pg_store_migrations.c: src/tools/embed_migrations.sh $(wildcard adapters/postgres/migrations/*.sql)
	@mkdir -p build/gen
	sh src/tools/embed_migrations.sh pg_store adapters/postgres/migrations > $@

build/gen/pg_inbox_migrations.c: src/tools/embed_migrations.sh $(wildcard adapters/postgres/inbox_migrations/*.sql)
	@mkdir -p build/gen
	sh src/tools/embed_migrations.sh pg_inbox adapters/postgres/inbox_migrations > $@

# deps.sh installs missing Debian packages as root (or prints the apt-get line) before the
# build starts; recursive make keeps -j from compiling before the headers are there.
test: test-build
	sh test/run.sh

# What the tests need: packages, the PromQL check's Node.js tool, the Python tools (the
# contract tester, the Kuma schema check) and the Go ones (decK's reconciler, the tracing
# tests' OpenTelemetry Collector), each cached
# outside the tree, and every test program.
test-build:
	@sh deploy/local/deps.sh test
	@[ -d test/tools/node_modules ] || npm ci --prefix test/tools --no-audit --no-fund
	@sh test/tools/pyvenv.sh test/contract/requirements.txt schemathesis >/dev/null
	@sh test/tools/pyvenv.sh test/tools/requirements.txt python3 >/dev/null
	@sh test/tools/gotool.sh test/tools/kongcheck >/dev/null
	@sh test/tools/otelcol/build.sh >/dev/null
	@$(MAKE) --no-print-directory build/test/app $(TEST_BINS) build/paced

# Steady mixed load for SOAK_MINUTES (default 30) against the sanitized app: RSS and open
# file descriptors flat, no failed request, no leak at exit (test/soak/test_soak.c).
SOAK_MINUTES ?= 30
soak: test-build
	SOAK_MINUTES=$(SOAK_MINUTES) APP_TEST_TIMEOUT=$$(( $(SOAK_MINUTES) * 60 + 600 )) \
	sh test/run.sh soak

# Mixed load against two app processes for CHAOS_SECONDS (default 600) while PostgreSQL,
# Redis, the Kafka broker and the apps themselves are restarted or killed on a fixed seed
# (CHAOS_SEED); then nothing may be lost (test/chaos/test_chaos.c).
CHAOS_SECONDS ?= 600
chaos: test-build
	CHAOS_SECONDS=$(CHAOS_SECONDS) APP_TEST_TIMEOUT=$$(( $(CHAOS_SECONDS) + 900 )) \
	sh test/run.sh chaos

# The whole suite RUNS times (default 5) under stress-ng on every core.
RUNS ?= 5
test-stress: test-build
	bash test/stress.sh $(RUNS)

UNIT_BINS := $(filter build/test/test/unit/% build/test/test/harness/%,$(TEST_BINS))
unit-test:
	@sh deploy/local/deps.sh unit
	$(if $(UNIT_BINS),@$(MAKE) --no-print-directory $(UNIT_BINS))
	sh test/run.sh unit

run:
	@sh deploy/local/deps.sh run
	@$(MAKE) --no-print-directory app
	sh deploy/local/run.sh

# libFuzzer targets (test/fuzz/fuzz_*.c) over the library built with Debian's clang;
# `make fuzz` runs each for FUZZ_SECONDS (default 300) from its corpus in test/fuzz/corpus,
# then the contract tester for longer (fuzz-contract).
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := $(STD) $(filter-out -Werror,$(WARN)) $(INC) -O1 -g -fno-omit-frame-pointer
FUZZ_OBJ     := $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC))
FUZZ_TARGETS := $(patsubst test/fuzz/%.c,build/fuzz/%,$(wildcard test/fuzz/fuzz_*.c))
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: %.c $(GEN_SRC)
	@mkdir -p $(dir $@)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/fuzz_%: test/fuzz/fuzz_%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LIBS)

# The routes' target runs the contexts over the in-memory stores of the tests.
build/fuzz/fuzz_routes: build/fuzz/obj/test/support/fake_stores.o

fuzz-build:
	@sh deploy/local/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS)

fuzz: fuzz-build
	bash test/fuzz/run.sh
	@$(MAKE) --no-print-directory fuzz-contract

# Schemathesis against the real server for longer than `make test` does: CONTRACT_EXAMPLES
# per operation (default 100), from CONTRACT_SEED (default: a new one, printed).
CONTRACT_EXAMPLES ?= 100
fuzz-contract: test-build
	APP_TEST_ONLY=test_contract APP_CONTRACT_EXAMPLES=$(CONTRACT_EXAMPLES) \
	APP_CONTRACT_SEED=$${CONTRACT_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	sh test/run.sh e2e

# The same binary as three services, one context and one database each, with Kafka between
# them (deploy/local/run-split.sh; README, "Split deployment").
run-split:
	@sh deploy/local/deps.sh run kafka
	@$(MAKE) --no-print-directory app
	bash deploy/local/run-split.sh

bench: app build/paced
	bash test/bench/run.sh

# make bench's constant-rate client (latency percentiles without coordinated omission).
build/paced: test/bench/paced.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_RELEASE) -o $@ $<

lint:
	@sh deploy/local/deps.sh lint
	sh src/tools/lint.sh

format:
	clang-format -i $$(find src adapters contexts test -name '*.[ch]')

clean:
	rm -rf build app

-include $(shell find build -name '*.d' 2>/dev/null)
