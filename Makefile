# kvchat — build, test, run. `make help` lists the targets.
#
# CUDA=auto (default) builds the CUDA backend when nvcc is on PATH; CUDA=0 forces a CPU-only build.
# Objects go to build/<variant>/ so CPU-only and CUDA builds never mix.

CC      ?= gcc
CXX     ?= g++
NVCC    ?= nvcc
CUDA    ?= auto
MARCH   ?= -march=native
OPT     ?= -O2
SANITIZE ?=

ifeq ($(CUDA),auto)
  CUDA := $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
endif

VARIANT := $(if $(filter 1,$(CUDA)),cuda,$(if $(filter emu,$(CUDA)),cuemu,cpu))$(if $(SANITIZE),-asan,)
BUILD   := build/$(VARIANT)

CPPFLAGS := -D_GNU_SOURCE -I. $(shell pkg-config --cflags sentencepiece 2>/dev/null)
CFLAGS   := -std=c11 $(OPT) $(MARCH) -g -pthread -Wall -Wextra -Wpedantic -Wshadow -MMD -MP $(SANITIZE)
CXXFLAGS := -std=c++17 $(OPT) $(MARCH) -g -pthread -Wall -Wextra -MMD -MP $(SANITIZE)
NCURSES_LIB := $(if $(wildcard /usr/include/ncursesw/curses.h /usr/include/curses.h),-lncursesw,)
LDLIBS   := -lsentencepiece $(NCURSES_LIB) -lpthread -lm -lstdc++
LDFLAGS  := $(SANITIZE)

# CUDA headers (for the emulated CUDA build of `make test`), found with or without nvcc on PATH
CUDA_INC := $(firstword $(wildcard $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC) 2>/dev/null)))/include/cuda_runtime.h \
                                    /usr/local/cuda/include/cuda_runtime.h))

ifeq ($(CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
  CPPFLAGS  += -DKN_HAVE_CUDA -isystem $(CUDA_HOME)/include
  NVCCFLAGS ?= -O3 -std=c++17 -gencode arch=compute_90,code=[sm_90,compute_90] -gencode arch=compute_80,code=sm_80 \
               -lineinfo -Xcompiler -Wall -I. -MMD -MP
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas
  CU_SRC    := $(wildcard kernels/*.cu)
else ifeq ($(CUDA),emu)
  # The CUDA backend on the CPU emulation of the CUDA execution model (tests/gpu/emu/): the same kernels/*.cu,
  # compiled by g++, against an emulated runtime and cuBLAS. `make test-emu` runs the GPU tests with it.
  CUDA_HOME ?= $(patsubst %/include/cuda_runtime.h,%,$(CUDA_INC))
  CPPFLAGS  += -DKN_HAVE_CUDA -DKN_CUDA_EMU -isystem $(CUDA_HOME)/include
  CU_SRC    := $(wildcard kernels/*.cu)
  CC_SRC_EMU := tests/gpu/emu/cuemu.cc
else
  CU_SRC    :=
endif

LIB_DIRS := model kvcache kernels tokenizer tui app
C_SRC    := $(filter-out app/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
CC_SRC   := $(wildcard tokenizer/*.cc) $(CC_SRC_EMU)
LIB_OBJ  := $(C_SRC:%.c=$(BUILD)/%.o) $(CC_SRC:%.cc=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
LIB      := $(BUILD)/libkvchat.a

TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELP := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_HOBJ := $(TEST_HELP:%.c=$(BUILD)/%.o)
TEST_SH   := $(filter-out tests/run_tests.sh,$(wildcard tests/*.sh)) # the runner is not a test
GPU_TEST_SRC := $(wildcard tests/gpu/test_*.c)
GPU_TEST_BIN := $(GPU_TEST_SRC:tests/gpu/%.c=$(BUILD)/tests/gpu/%)

.PHONY: all help deps test test-emu test-asan test-model test-gpu bench bench-matmul bench-gpu gpu-bundle cuda-check model run clean format
.PHONY: kvchat build-tests run-tests
all: kvchat

help:
	@echo "make          build ./kvchat (CUDA backend when nvcc is found; CUDA=0 for CPU only)"
	@echo "make run      install deps, build, fetch the default model, start the chat"
	@echo "make test     install deps, build and run the test suite (prints 'N passed, N failed')"
	@echo "make test-asan  the suite under AddressSanitizer + UBSan"
	@echo "make test-model tests that need the default model (make model first)"
	@echo "make model    fetch the default Gemma 3 270M GGUF into assets/models/"
	@echo "make bench    CPU benchmark on generated TinyLlama-1.1B-shape GGUFs"
	@echo "make cuda-check  compile and link the CUDA backend"
	@echo "make test-emu  the GPU tests on the CPU emulation of CUDA (part of make test when CUDA headers exist)"
	@echo "make test-gpu / bench-gpu  GPU tests and benchmarks (need an NVIDIA GPU)"
	@echo "make gpu-bundle  pack them for a GPU machine without the build deps (tests/gpu/device_run.sh there)"

deps:
	@sh tests/tools/deps.sh

kvchat: $(BUILD)/kvchat
	@cp $< $@

$(BUILD)/kvchat: $(BUILD)/app/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
ifeq ($(CUDA),emu)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -Wno-unknown-pragmas -fno-strict-aliasing -ffp-contract=off -x c++ -include tests/gpu/emu/cuemu.h -c -o $@ $<
else
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<
endif

$(BUILD)/tests/%: tests/%.c $(TEST_HOBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HOBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/gpu/%: tests/gpu/%.c $(TEST_HOBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TEST_HOBJ) $(LIB) $(LDLIBS)

# The emulation's own test (a .cu-style source compiled like kernels/*.cu in the emu build)
$(BUILD)/tests/gpu/emu/test_cuemu: tests/gpu/emu/test_cuemu.cc $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -Wno-unknown-pragmas -fno-strict-aliasing -ffp-contract=off \
		-include tests/gpu/emu/cuemu.h $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# The suite runs on the CPU build (CUDA=0 unless given): it is what every machine, CI included, can run.
# `make test-gpu` covers the CUDA backend.
TEST_CUDA ?= 0
test: deps
	@$(MAKE) --no-print-directory CUDA=$(TEST_CUDA) build-tests
	@$(MAKE) --no-print-directory CUDA=$(TEST_CUDA) run-tests

run-tests:
	@KVCHAT_BIN=$(BUILD)/kvchat sh tests/run_tests.sh $(BUILD) $(TEST_BIN) $(TEST_SH)

build-tests: $(BUILD)/kvchat $(TEST_BIN)
ifneq ($(CUDA_INC),)
ifeq ($(SANITIZE),)
	@$(MAKE) --no-print-directory CUDA=emu build/cuemu/kvchat build/cuemu/mkmodel build/cuemu/tests/gpu/test_ops \
		build/cuemu/tests/gpu/emu/test_cuemu
endif
endif

# The GPU tests on the CPU emulation of CUDA (tests/gpu/emu, tests/cuda_emu.sh); also part of `make test`.
# With SANITIZE="-fsanitize=address,undefined" OPT=-O1 (build/cuemu-asan) device buffers are checked by ASan.
EMU_BUILD := build/cuemu$(if $(SANITIZE),-asan,)
test-emu:
	@$(MAKE) --no-print-directory CUDA=emu $(EMU_BUILD)/kvchat $(EMU_BUILD)/mkmodel $(EMU_BUILD)/tests/gpu/test_ops \
		$(EMU_BUILD)/tests/gpu/emu/test_cuemu
	@KVCHAT_EMU_BUILD=$(EMU_BUILD) sh tests/run_tests.sh $(EMU_BUILD) tests/cuda_emu.sh

test-asan:
	@$(MAKE) --no-print-directory CUDA=0 OPT=-O1 SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer" \
		TEST_CUDA=0 test

test-model: deps
	@$(MAKE) --no-print-directory CUDA=0 build-tests
	@KVCHAT_TEST_MODEL=1 $(MAKE) --no-print-directory CUDA=0 run-tests

cuda-check:
	@$(MAKE) --no-print-directory CUDA=1 kvchat $(GPU_TEST_BIN:build/cpu/%=build/cuda/%)
	@echo "cuda-check: CUDA backend compiled and linked"

test-gpu:
	@$(MAKE) --no-print-directory CUDA=1 kvchat build/cuda/mkmodel $(patsubst build/cpu%,build/cuda%,$(GPU_TEST_BIN))
	@sh tests/run_tests.sh build/cuda $(patsubst build/cpu%,build/cuda%,$(GPU_TEST_BIN)) tests/gpu/gen_match.sh

# Random-weight GGUF generator (model/synth.h): make mkmodel, then build/<variant>/mkmodel --help.
.PHONY: mkmodel
mkmodel: $(BUILD)/mkmodel

$(BUILD)/mkmodel: tests/tools/mkmodel.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

bench: kvchat
	@sh tests/tools/bench.sh $(BUILD)

# CPU matmul throughput on TinyLlama-1.1B shapes (built by the tests/% rule above); ARGS="-t 2 -r 5"
bench-matmul: $(BUILD)/tests/tools/bench_matmul
	$(BUILD)/tests/tools/bench_matmul $(ARGS)

# The GPU tests and benchmarks packed for a GPU machine that cannot build the project (tests/gpu/bundle.sh);
# there: sh tests/gpu/device_run.sh test|bench|all
gpu-bundle:
	@sh tests/gpu/bundle.sh

bench-gpu:
	@$(MAKE) --no-print-directory CUDA=1 kvchat build/cuda/mkmodel build/cuda/tests/gpu/gpu_info
	@sh tests/tools/bench_gpu.sh

model:
	@sh tests/tools/fetch_model.sh

run: deps kvchat model
	./kvchat

format:
	clang-format -i $(C_SRC) app/main.c $(CC_SRC) $(wildcard kernels/*.cu) $(wildcard */*.h) tests/*.c

clean:
	rm -rf build kvchat

-include $(shell find build -name '*.d' 2>/dev/null)
