# recsys: PGXS build of the extension (and, through proxy/, its HTTP proxy).

EXTENSION = recsys
EXTVERSION = 1.1

MODULE_big = recsys
CORE_OBJS = src/core_train.o src/core_simd.o src/core_eigen.o src/core_recommend.o src/core_evaluate.o src/core_shape.o src/core_passes.o \
            src/core_similarity.o src/core_tune.o src/core_source.o
GLUE_OBJS = src/pg_module.o src/pg_guard.o src/pg_source.o src/pg_model.o src/pg_fetch.o src/pg_spill.o src/pg_train.o \
            src/pg_recommend.o src/pg_lookup.o src/pg_matrix.o src/pg_evaluate.o src/pg_progress.o src/pg_runlog.o \
            src/pg_tune.o src/pg_read.o src/pg_ids.o
OBJS = $(CORE_OBJS) $(GLUE_OBJS)

DATA = $(wildcard sql/$(EXTENSION)--*.sql)

# Regression tests: sql/<name>.sql, expected/<name>.out (install scripts share sql/).
REGRESS = recsys_setup recsys_semantics recsys_bad_input recsys_evaluate recsys_train recsys_config \
          recsys_lifecycle recsys_runs recsys_passes recsys_tune recsys_security recsys_source recsys_serving \
          recsys_pipeline
REGRESS_OPTS = --inputdir=. --load-extension=plpgsql
ISOLATION = train_vs_recommend
ISOLATION_OPTS = --inputdir=. --load-extension=plpgsql

# CI builds with warnings as errors (set before PGXS reads PG_CXXFLAGS).
ifdef CI
RECSYS_WERROR = -Werror
endif
PG_CPPFLAGS = -I$(srcdir)/src -I/usr/include/eigen3
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-register $(RECSYS_WERROR)
SHLIB_LINK += -lstdc++ -lpthread

# Debian's PGXS also emits LLVM bitcode with clang-14 without our C++ flags;
# the extension gains nothing from JIT inlining, so skip it.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild every object when a header
# changes (a stale object that still links against an old signature fails
# only when the server loads the library).
$(OBJS): $(wildcard src/*.hpp)

# The HTTP proxy is built and installed with the extension; it goes to
# $(PROXY_BINDIR), on the PATH (PGXS's bindir is PostgreSQL's own).
PROXY_BINDIR ?= /usr/local/bin
.PHONY: proxy install-proxy clean-proxy
all: proxy
proxy:
	$(MAKE) -C proxy
install: install-proxy
install-proxy: proxy
	$(MAKE) -C proxy install bindir=$(PROXY_BINDIR)
clean: clean-proxy
clean-proxy:
	$(MAKE) -C proxy clean
