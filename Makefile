# mesh-llm — plain Makefile. `make` builds build/mesh-llm; `make test` runs every test.
# Dependencies: Debian packages in scripts/deps.txt (installed by `make deps`).

CC      ?= cc
BUILD   ?= build
# One job per CPU unless the command line says -j (sub-makes share the
# top-level make's job slots).
ifeq ($(MAKELEVEL)$(filter -j%,$(MAKEFLAGS)),0)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif
OPT     ?= -O2
PKGS    := libevent libevent_pthreads jansson libsodium libpcre2-8 libcurl gnutls \
           libngtcp2 libngtcp2_crypto_gnutls
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) -g -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
           -Isrc -MMD -MP $(PKG_CFLAGS) $(SAN)
LDLIBS  += $(PKG_LIBS) -lpthread -lm $(SAN)

# Modules, lowest first (DESIGN.md). A module's test links its own archive and
# everything below it.
MODULES := base gguf kernels model tokenizer sampler engine net mesh api console
lib_of   = $(BUILD)/lib$(1).a
# archives for module $(1) and all modules listed before it, highest first
libs_upto = $(foreach m,$(call reverse,$(call take_upto,$(1),$(MODULES))),$(call lib_of,$(m)))
take_upto = $(if $(filter $(1),$(firstword $(2))),$(1),$(firstword $(2)) $(call take_upto,$(1),$(wordlist 2,999,$(2))))
reverse   = $(if $(1),$(call reverse,$(wordlist 2,999,$(1))) $(firstword $(1)))

# SIMD variants get their ISA flags per file; everything else stays portable.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16
isa_flags = $(if $(findstring _avx512,$(1)),$(AVX512_FLAGS),$(if $(findstring _avx2,$(1)),$(AVX2_FLAGS)))

src_of  = $(wildcard src/$(1)/*.c)
objs_of = $(patsubst %.c,$(BUILD)/%.o,$(call src_of,$(1)))

APP_SRC  := $(filter-out src/app/main.c,$(wildcard src/app/*.c))
APP_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(APP_SRC))
TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BINS:= $(patsubst %.c,$(BUILD)/%,$(TEST_SRC))
TOOL_SRC := $(wildcard tools/*.c)
TOOL_BINS:= $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
BENCH_SRC:= $(wildcard bench/*.c)
BENCH_BINS:= $(patsubst bench/%.c,$(BUILD)/bench-%,$(BENCH_SRC))
ALL_LIBS := $(call reverse,$(foreach m,$(MODULES),$(call lib_of,$(m))))

.SECONDARY:
.PHONY: all deps test check asan fuzz fuzz-bins bench clean run tests-bin bench-serve
all: $(BUILD)/mesh-llm $(TOOL_BINS)

deps:
	@scripts/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call isa_flags,$<) -c $< -o $@

define module_rule
$(call lib_of,$(1)): $(call objs_of,$(1))
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	$$(AR) rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rule,$(m))))

# ar needs at least one member even for a module that has no code yet
$(BUILD)/.empty.o:
	@mkdir -p $(BUILD)
	echo 'typedef int ml_empty_unit;' | $(CC) -x c -c - -o $@
$(foreach m,$(MODULES),$(call lib_of,$(m))): $(BUILD)/.empty.o

$(BUILD)/mesh-llm: $(BUILD)/src/app/main.o $(APP_OBJS) $(ALL_LIBS)
	$(CC) -o $@ $^ $(LDLIBS)

# tests/<module>/test_x.c links that module and everything below it
define test_rule
$(BUILD)/tests/$(1)/%: $(BUILD)/tests/$(1)/%.o $(call libs_upto,$(1))
	$$(CC) -o $$@ $$^ -lcmocka $$(LDLIBS)
endef
$(foreach m,$(filter $(MODULES),$(notdir $(wildcard tests/*))),$(eval $(call test_rule,$(m))))
$(BUILD)/tests/app/%: $(BUILD)/tests/app/%.o $(APP_OBJS) $(ALL_LIBS)
	$(CC) -o $@ $^ -lcmocka $(LDLIBS)

$(BUILD)/%: $(BUILD)/tools/%.o $(APP_OBJS) $(ALL_LIBS)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/bench-%: $(BUILD)/bench/%.o $(APP_OBJS) $(ALL_LIBS)
	$(CC) -o $@ $^ $(LDLIBS)

tests-bin: all $(TEST_BINS)

test: deps
	@$(MAKE) --no-print-directory tests-bin
	@$(MAKE) --no-print-directory fuzz
	@BUILD=$(BUILD) FUZZ_BUILD=build-fuzz tests/run.sh

# Sanitizer build of everything plus the whole test suite.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" tests-bin
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 tests/run.sh

bench: all $(BENCH_BINS)
	@for b in $(BENCH_BINS); do $$b || exit 1; done

# OpenAI API serving benchmark (1/2/4/8 concurrent streams vs mesh-llm generate).
bench-serve: all
	@BUILD=$(BUILD) bench/serve.sh

# Split inference: decode tokens/s solo vs 2 vs 3 stages at 0/5/20 ms one-way
# delay (real processes over QUIC on loopback) and join-to-serving time.
.PHONY: bench-split
bench-split: all
	@BUILD=$(BUILD) bench/split_bench.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/mesh-llm --model models/stories260K.gguf

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# libFuzzer targets (clang): fuzz/fuzz_<name>.c -> build-fuzz/fuzz_<name>
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS = $(patsubst fuzz/%.c,$(BUILD)/%,$(FUZZ_SRC))
fuzz:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT=-O1 \
		SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined" fuzz-bins
fuzz-bins: $(FUZZ_BINS)
# The tile kernels are long unrolled intrinsics that take clang minutes under
# ASan+UBSan and that no fuzz target reaches: the fuzz build compiles them
# plain, optimized as in the normal build (make asan still sanitizes them).
build-fuzz/src/kernels/kern_tile_%.o: override SAN :=
build-fuzz/src/kernels/kern_tile_%.o: override OPT := -O2
$(BUILD)/fuzz_%: $(BUILD)/fuzz/fuzz_%.o $(ALL_LIBS)
	$(CC) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
