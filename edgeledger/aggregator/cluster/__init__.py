"""The aggregator at scale: ingest workers and one elected sequencer over PostgreSQL.

    broker --$share/<group>/...--> worker (verify.py: stateless checks) --> queue table
                                       |  refusals, committed dups: answered here
    queue --> sequencer (elected: sequencer.py; sequence.py: stateful checks)
          --> append_blocks (one transaction, fork-guarded) --> acks, checkpoints

Every `edgeledger aggregator` process on `[store] backend = "postgres"` runs one
worker and one sequencer candidate (process.py). See each module's doc for why.
"""
