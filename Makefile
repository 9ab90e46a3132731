# The two commands: `make run` and `make test`. Everything they need is
# installed by them (fixtures/install-deps.sh) on a fresh machine.

CARGO ?= cargo
RUN_DIR := target/run
OFFSITE := target/debug/offsite
RUN_CONFIG := fixtures/run/offsite.toml
# The real servers the tests talk to (tests/servers/<name>.sh start|stop).
SERVERS := moto sshd ftp proftpd azurite postgres

.PHONY: run test bench fuzz deps build lint fmt clean-run man

deps:
	@bash fixtures/install-deps.sh

build:
	$(CARGO) build

# Back up the fixture databases (an EventStoreDB-like data directory and a
# real SQLite database) to a local folder, then list and verify them.
run: deps build
	python3 fixtures/make-fixtures.py $(RUN_DIR)/db
	mkdir -p $(RUN_DIR)/backups
	$(OFFSITE) --config $(RUN_CONFIG) check
	$(OFFSITE) --config $(RUN_CONFIG) backup
	$(OFFSITE) --config $(RUN_CONFIG) list
	$(OFFSITE) --config $(RUN_CONFIG) verify --backup latest
	@echo "backups are in $(RUN_DIR)/backups; restore one with:"
	@echo "  $(OFFSITE) --config $(RUN_CONFIG) restore --job eventstore --to /tmp/restored"

# Every test: unit and table tests, the backends' conformance suite against
# their real servers, and end-to-end runs of the real binary. The servers are
# started here (tests/servers/) and stopped by their PID whatever the result.
test: deps lint
	@rc=0; \
	for s in $(SERVERS); do tests/servers/$$s.sh start || { rc=1; break; }; done; \
	if [ $$rc -eq 0 ]; then $(CARGO) test --workspace --all-targets; rc=$$?; fi; \
	for s in $(SERVERS); do tests/servers/$$s.sh stop; done; \
	exit $$rc

# offsite against the tools people use instead, on a generated EventStoreDB-like
# data directory of about 800 MiB (target/bench/): staging against tar | zstd
# and restic, uploads to SFTP against rclone and OpenSSH's sftp, to S3 against
# rclone (on moto, and on s3s-fs, a server with other costs than moto's);
# then offsite alone at 4x the data, for its memory. Prints a table and the
# targets; writes target/bench/results.json. BENCH_ARGS passes flags (--quick,
# --runs N, --no-scale). sshd, moto and s3s-fs are started here (the first
# s3s.sh start builds s3s-fs: ~5 min) and stopped by their scripts whatever
# the result.
BENCH_SERVERS := sshd moto s3s
BENCH_ARGS ?=
# The peers, from Debian: rclone (SFTP and S3 uploads), restic (staging into
# a local repository), OpenSSH's sftp (the SFTP reference).
BENCH_PEERS := rclone:rclone restic:restic sftp:openssh-client
bench:
	@bash fixtures/install-deps.sh $(BENCH_PEERS)
	$(CARGO) build --release --bin offsite
	@rc=0; \
	for s in $(BENCH_SERVERS); do tests/servers/$$s.sh start || { rc=1; break; }; done; \
	if [ $$rc -eq 0 ]; then python3 tests/bench/bench.py $(BENCH_ARGS); rc=$$?; fi; \
	for s in $(BENCH_SERVERS); do tests/servers/$$s.sh stop; done; \
	exit $$rc

# The parsers' fuzzing at length: FUZZ_CASES inputs per property (4
# properties: random text and mutations, for the config and the manifest).
# `make test` runs 2,000 per property.
FUZZ_CASES ?= 250000
fuzz:
	@start=$$(date +%s); \
	OFFSITE_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --test fuzz_parsers -- --nocapture; rc=$$?; \
	echo "fuzz: $(FUZZ_CASES) inputs per property, 4 properties, $$(( $$(date +%s) - start )) s (build included), exit $$rc"; \
	exit $$rc

# The man pages, generated from the command line's definitions:
# target/man/offsite.1 and offsite-COMMAND.1 (read one with `man -l`).
man: build
	target/debug/offsite man --out target/man

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-run:
	rm -rf $(RUN_DIR)
