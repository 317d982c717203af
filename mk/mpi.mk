# MPI (issue #6): the command line built with Open MPI, so that
# `mpirun -np P build-mpi/bnspike sweep ...` splits a sweep over P ranks
# (docs/sweeps.md, "Distributed sweeps").  Only the CLI differs: its objects
# are compiled by mpicc with -DBN_HAVE_MPI into $(MPI_BUILD)/ and linked with
# the same library as $(BUILD)/bnspike.
#
#   make MPI=1          everything as usual, plus $(MPI_BUILD)/bnspike
#   make mpi            only $(MPI_BUILD)/bnspike
#   make test-mpi       tests/mpi_check.sh: mpirun -np 2 (and 3) against the
#                       single-process sweep, row for row
#   make mpi-clean      remove $(MPI_BUILD)/
#   MPI_BUILD=...       the folder (default $(BUILD)-mpi, i.e. build-mpi)
#   MPICC=... MPIRUN=...  the MPI compiler wrapper and launcher
#
# Open MPI comes from Debian's openmpi-bin and libopenmpi-dev
# (`sh scripts/install-deps.sh all`; run here when mpicc is missing).

MPI       ?= 0
MPICC     ?= mpicc
MPIRUN    ?= mpirun
MPI_BUILD ?= $(BUILD)-mpi
MPI_CLI   := $(MPI_BUILD)/bnspike
MPI_CLI_OBJ := $(CLI_SRC:%.c=$(MPI_BUILD)/%.o)

.PHONY: mpi test-mpi mpi-clean

ifeq ($(MPI),1)
all: $(MPI_CLI)
endif

mpi: $(MPI_CLI)

$(MPI_BUILD)/.mpi-ok:
	@command -v $(MPICC) >/dev/null 2>&1 || sh scripts/install-deps.sh all
	@mkdir -p $(MPI_BUILD) && touch $@

$(MPI_BUILD)/%.o: %.c $(MPI_BUILD)/.mpi-ok $(BUILD)/.deps-ok $(BUILD)/.flags $(BUILD)/git_commit.h
	@mkdir -p $(dir $@)
	$(MPICC) $(CPPFLAGS) -DBN_HAVE_MPI $(CFLAGS) -MMD -MP -c $< -o $@

$(MPI_CLI): $(MPI_CLI_OBJ) $(LIB)
	$(MPICC) $(LDFLAGS) $^ $(LDLIBS) -o $@

test-mpi: $(MPI_CLI) $(CLI)
	MPIRUN=$(MPIRUN) sh tests/mpi_check.sh $(abspath $(MPI_CLI)) $(abspath $(CLI))

mpi-clean:
	rm -rf $(MPI_BUILD)

-include $(shell find $(MPI_BUILD) -name '*.d' 2>/dev/null)
