# Fuzzing (issue #6): libFuzzer targets for the .npy, .npz and CSV readers
# and the command-line parser, built with clang into build-fuzz/ (CUDA off).
# See docs/fuzzing.md.
#
#   make fuzz                 build, then run each target FUZZ_SECONDS (60) s
#                             from its seed corpus in tests/fuzz_corpus/<target>/;
#                             fails when a target crashes, leaks or times out,
#                             after copying the input to .../<target>/regress/
#   make fuzz-smoke           the same for 10 s each
#   make fuzz-replay          every corpus file (seeds and regress/) once
#   make fuzz-build           only build build-fuzz/fuzz_<target>
#   FUZZ_TARGETS="npy csv"    a subset;  FUZZ_ARGS=...  extra libFuzzer flags
#   make fuzz-clean           remove build-fuzz/

FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= npy npz csv cli
FUZZ_ARGS    ?=

# Per target: the largest input, the per-input timeout (s) and memory limit
# (MB), and a dictionary.  A deflated .npz member may claim up to ~1032x its
# compressed size, so the .npz limit bounds allocations to ~8 MB per input.
FUZZ_OPTS_npy := -max_len=4096 -timeout=10 -rss_limit_mb=2048 -dict=$(CURDIR)/fuzz/npy.dict
FUZZ_OPTS_npz := -max_len=8192 -timeout=10 -rss_limit_mb=2048 -dict=$(CURDIR)/fuzz/npz.dict
FUZZ_OPTS_csv := -max_len=4096 -timeout=10 -rss_limit_mb=2048 -dict=$(CURDIR)/fuzz/csv.dict
FUZZ_OPTS_cli := -max_len=1024 -timeout=10 -rss_limit_mb=2048 -dict=$(CURDIR)/fuzz/cli.dict -close_fd_mask=2

FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   := -g -O1 -std=c11 $(WARN) -fno-math-errno $(FUZZ_SAN)
FUZZ_CPPFLAGS := -Iinclude -Isrc -Ifuzz -D_GNU_SOURCE
FUZZ_LDLIBS   := -llapacke -lopenblas -lz -lm

FUZZ_LIB_SRC := $(wildcard src/*.c src/cpu/*.c)
FUZZ_CLI_SRC := $(filter-out src/cli/cli_entry.c,$(wildcard src/cli/*.c))
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_CLI_OBJ := $(FUZZ_CLI_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-smoke fuzz-replay fuzz-build fuzz-clean

fuzz: fuzz-build
	@rc=0; $(foreach t,$(FUZZ_TARGETS),sh fuzz/run.sh $(t) $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_OPTS_$(t)) $(FUZZ_ARGS) || rc=1;) \
	if [ $$rc != 0 ]; then echo "make fuzz: FAILED: crashing inputs were copied to tests/fuzz_corpus/<target>/regress/ (see above)"; fi; exit $$rc

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

fuzz-replay: fuzz-build
	@rc=0; $(foreach t,$(FUZZ_TARGETS),sh fuzz/run.sh $(t) $(FUZZ_BUILD) replay $(FUZZ_OPTS_$(t)) $(FUZZ_ARGS) || rc=1;) exit $$rc

fuzz-build: $(FUZZ_BINS)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

# clang and libFuzzer (scripts/install-deps.sh all installs what is missing).
$(FUZZ_BUILD)/.deps-ok: scripts/install-deps.sh
	@command -v $(FUZZ_CC) >/dev/null && ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 \
	  || sh scripts/install-deps.sh all
	@mkdir -p $(FUZZ_BUILD) && touch $@

# OpenMP: clang's -fopenmp needs libomp (libomp-dev), which install-deps does
# not install; without it the library builds serial against a stub <omp.h>
# (pragmas ignored), which is all the readers and the parser need.
$(FUZZ_BUILD)/omp.flags: $(FUZZ_BUILD)/.deps-ok
	@mkdir -p $(FUZZ_BUILD)/omp-stub
	@printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 0; }\n' > $(FUZZ_BUILD)/omp-probe.c
	@if $(FUZZ_CC) -fopenmp $(FUZZ_BUILD)/omp-probe.c -o $(FUZZ_BUILD)/omp-probe 2>/dev/null; then \
	  echo '-fopenmp' > $@; echo "fuzz build: OpenMP through libomp"; \
	else \
	  cp fuzz/omp_stub.h $(FUZZ_BUILD)/omp-stub/omp.h; \
	  echo '-isystem $(FUZZ_BUILD)/omp-stub' > $@; echo "fuzz build: no libomp for $(FUZZ_CC): serial build with a stub <omp.h>"; \
	fi
	@rm -f $(FUZZ_BUILD)/omp-probe $(FUZZ_BUILD)/omp-probe.c

# Library and CLI objects: coverage instrumentation without libFuzzer's main.
$(FUZZ_BUILD)/src/%.o: src/%.c $(FUZZ_BUILD)/omp.flags
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $$(cat $(FUZZ_BUILD)/omp.flags) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz/%.o: fuzz/%.c $(FUZZ_BUILD)/omp.flags
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libbnspike_fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The readers' targets share fuzz_entries.c (also #included by
# tests/test_fuzz_corpus.c); the CLI target links the command line without
# cli_entry.c (main) -- libFuzzer brings its own.
$(FUZZ_BUILD)/fuzz_npy $(FUZZ_BUILD)/fuzz_npz $(FUZZ_BUILD)/fuzz_csv: $(FUZZ_BUILD)/fuzz_%: \
    $(FUZZ_BUILD)/fuzz/fuzz_%.o $(FUZZ_BUILD)/fuzz/fuzz_entries.o $(FUZZ_BUILD)/libbnspike_fuzz.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $$(cat $(FUZZ_BUILD)/omp.flags | grep -o -- '-fopenmp') $^ $(FUZZ_LDLIBS) -o $@

$(FUZZ_BUILD)/fuzz_cli: $(FUZZ_BUILD)/fuzz/fuzz_cli.o $(FUZZ_CLI_OBJ) $(FUZZ_BUILD)/libbnspike_fuzz.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $$(cat $(FUZZ_BUILD)/omp.flags | grep -o -- '-fopenmp') $^ $(FUZZ_LDLIBS) -o $@

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
