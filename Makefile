# bnspike build.  `make demo` and `make test` do all the set-up on a fresh
# Debian 12 machine (scripts/install-deps.sh installs what is missing).
#
#   make            library, CLI (build/bnspike), tests, benchmarks
#   make demo       run the embedded default delayed-spike example
#   make test       the whole test suite (Criterion)
#   make bench      the benchmark table: bnspike vs the two-GEMM floor and the
#                   PyTorch/numpy peers, side by side (~5 min; BENCH_ARGS=--quick ~1.5)
#   make bench-cpu  CPU benchmark against the two-GEMM floor
#   make bench-sharpness  one batched power-iteration step (HVP) against a GD step
#   make bench-gpu  GPU benchmark (build/bench_gpu; needs CUDA=1 and a device)
#   make asan       the test suite under ASan + UBSan (build-asan/)
#   make figures    regenerate docs/figures/*.png (scripts/figures.sh, gnuplot)
#   make CUDA=0     build without the CUDA backend even where nvcc exists

CC      ?= gcc
BUILD   ?= build
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CU_SRC  := $(wildcard src/cuda/*.cu)
CUDA    ?= $(if $(and $(NVCC),$(CU_SRC)),1,0)
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
# sm_90 (H100/H200) machine code plus PTX that later GPUs can JIT.
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90

OPT      ?= -O2
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes
CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 $(WARN) -fopenmp -fno-math-errno
LDLIBS   += -llapacke -lopenblas -lz -lm
LDFLAGS  += -fopenmp

LIB_SRC  := $(wildcard src/*.c src/cpu/*.c)
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/*.c)

ifeq ($(CUDA),1)
CPPFLAGS += -DBN_HAVE_CUDA
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.o)
NVFLAGS  ?= -O3 -std=c++17 $(CUDA_ARCH) -Iinclude -Isrc -Xcompiler -Wall,-Wextra
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libbnspike.a
CLI      := $(BUILD)/bnspike
TESTS    := $(BUILD)/bnspike_tests

.PHONY: all deps demo test bench bench-cpu bench-gpu bench-sharpness asan clean info FORCE
all: info $(CLI) $(TESTS) $(BUILD)/bench_table $(BUILD)/bench_cpu $(BUILD)/bench_sharpness $(BUILD)/bench_det_gemm $(if $(filter 1,$(CUDA)),$(BUILD)/bench_gpu $(BUILD)/gpu_profile)

info:
	@echo "bnspike build: CC=$(CC) CUDA=$(CUDA)$(if $(NVCC), (nvcc: $(NVCC)),  (no nvcc found))"

# Installs missing Debian packages (only when something is missing).
deps:
	@sh scripts/install-deps.sh

$(BUILD)/.deps-ok: scripts/install-deps.sh
	@sh scripts/install-deps.sh
	@mkdir -p $(BUILD) && touch $@

# The commit goes into run.json; the header changes only when the commit does.
GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
$(BUILD)/git_commit.h: FORCE
	@mkdir -p $(BUILD)
	@echo '#define BN_GIT_COMMIT "$(GIT_COMMIT)"' > $@.new
	@cmp -s $@.new $@ && rm -f $@.new || mv $@.new $@
FORCE:
$(CLI_OBJ): $(BUILD)/git_commit.h
# Objects depend on the flags, so `make CUDA=0` after `make` rebuilds what changed.
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CPPFLAGS) $(CFLAGS) $(NVFLAGS)' > $@.new
	@cmp -s $@.new $@ && rm -f $@.new || mv $@.new $@
CPPFLAGS += -I$(BUILD)

$(BUILD)/%.o: %.c $(BUILD)/.deps-ok $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu $(BUILD)/.deps-ok $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(filter -D%,$(CPPFLAGS)) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLI): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(TESTS): $(TEST_OBJ) $(LIB) | $(CLI)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcriterion -o $@

$(BUILD)/bench_table: $(BUILD)/bench/bench.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench_cpu: $(BUILD)/bench/bench_cpu.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench_sharpness: $(BUILD)/bench/bench_sharpness.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench_det_gemm: $(BUILD)/bench/bench_det_gemm.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench_gpu: $(BUILD)/bench/bench_gpu.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Where a GPU step's time goes, op by op (CUDA=1, needs a device to run).
$(BUILD)/gpu_profile: $(BUILD)/bench/gpu_profile.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

demo: $(CLI)
	$(CLI) demo --out demo-out

# Optional parts, each in its own file: fuzzing (mk/fuzz.mk), MPI (mk/mpi.mk).
-include $(wildcard mk/*.mk)

# The README's figures: runs, sweeps and `bnspike plot` (seconds on 2 cores).
figures: $(CLI)
	sh scripts/figures.sh $(CLI)

# The tests find the CLI and fixtures relative to the repository root.
test: $(TESTS) $(CLI)
	BNSPIKE_CLI=$(abspath $(CLI)) $(TESTS) $(TEST_ARGS)

# One table, every row measured in this run (bench/RESULTS.md).  The peers
# need a Python with numpy and torch: PYTHON=... (default python3).
# BENCH_ARGS: --quick, --csv FILE, --threads N, --peers none, --only TEXT, ...
# (build/bench_table: build/bench/ holds the benchmarks' objects.)
bench: $(BUILD)/bench_table
	$(BUILD)/bench_table $(BENCH_ARGS)

bench-cpu: $(BUILD)/bench_cpu
	$(BUILD)/bench_cpu $(BENCH_ARGS)

bench-sharpness: $(BUILD)/bench_sharpness
	$(BUILD)/bench_sharpness $(BENCH_ARGS)

bench-gpu: $(BUILD)/bench_gpu
	$(BUILD)/bench_gpu $(BENCH_ARGS)

asan:
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(MAKE) BUILD=build-asan CUDA=0 OPT=-O1 \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fopenmp -fsanitize=address,undefined" test

clean:
	rm -rf build build-asan

# Every object's header dependencies, benchmarks included (a stale bench object
# built against an older bnspike.h would write past a smaller struct).
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
