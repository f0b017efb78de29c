-- chatlens in ClickHouse: the JSON log lines (shipped by Vector, see deploy/vector/vector.yaml)
-- and the conversation_metrics export. Load with:
--   clickhouse-client --multiquery < deploy/clickhouse/schema.sql
-- The queries that use these tables are in docs/clickhouse.md.

CREATE DATABASE IF NOT EXISTS chatlens;

-- One row per log line.
--
-- Vector sends the line as it was written (`raw`) and its time (`timestamp`). Every other
-- column is MATERIALIZED: ClickHouse reads it out of `raw` on insert. So the typed columns
-- always agree with the line, and a field whose type varies never makes an insert fail.
-- One example: `status` is the HTTP status (an integer) on `http_request` lines, but the
-- answer's outcome (`complete`, `error`, ...) on `message_processed` lines. That outcome
-- goes to `answer_status`. A field that is missing reads as '' or NULL.
-- MATERIALIZED columns are not part of `SELECT *`: name them in the query.
--
-- The other fields of an event (`exception`, `kind`, `score`, ...) stay in `raw`.
-- Read them with JSONExtract*(raw, 'name').
CREATE TABLE IF NOT EXISTS chatlens.logs
(
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    raw String CODEC(ZSTD(3)),

    -- Fields on every line. Few distinct values, so LowCardinality.
    level LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'level'),
    -- chatlens events are snake_case names, but a library puts its whole message here.
    event String MATERIALIZED JSONExtractString(raw, 'event'),
    logger LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'logger'),
    service LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'service'),
    version LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'version'),
    environment LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'environment'),

    -- Fields of lines written inside an HTTP request.
    request_id String MATERIALIZED JSONExtractString(raw, 'request_id'),
    trace_id String MATERIALIZED JSONExtractString(raw, 'trace_id'),
    span_id String MATERIALIZED JSONExtractString(raw, 'span_id'),
    method LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'method'),
    -- The route template (`/api/conversations/{conversation_id}`, `__unmatched__`).
    route LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'route'),
    user_id String MATERIALIZED JSONExtractString(raw, 'user_id'),
    project_id LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'project_id'),
    conversation_id String MATERIALIZED JSONExtractString(raw, 'conversation_id'),
    platform LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'platform'),

    -- The access line, `http_request`. NULL on other lines.
    path String MATERIALIZED JSONExtractString(raw, 'path'),
    status Nullable(UInt16) MATERIALIZED JSONExtract(raw, 'status', 'Nullable(UInt16)'),
    duration_ms Nullable(Float64) MATERIALIZED JSONExtract(raw, 'duration_ms', 'Nullable(Float64)'),
    client_ip String MATERIALIZED JSONExtractString(raw, 'client_ip'),
    user_agent String MATERIALIZED JSONExtractString(raw, 'user_agent'),

    -- One line per answer, `message_processed`. NULL on other lines.
    intent LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'intent'),
    confidence Nullable(Float64) MATERIALIZED JSONExtract(raw, 'confidence', 'Nullable(Float64)'),
    response_time_ms Nullable(Float64)
        MATERIALIZED JSONExtract(raw, 'response_time_ms', 'Nullable(Float64)'),
    ttft_ms Nullable(Float64) MATERIALIZED JSONExtract(raw, 'ttft_ms', 'Nullable(Float64)'),
    ai_tokens_used Nullable(UInt32)
        MATERIALIZED JSONExtract(raw, 'ai_tokens_used', 'Nullable(UInt32)'),
    cost_usd Nullable(Float64) MATERIALIZED JSONExtract(raw, 'cost_usd', 'Nullable(Float64)'),
    ai_model LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'ai_model'),
    escalated Nullable(Bool) MATERIALIZED JSONExtract(raw, 'escalated', 'Nullable(Bool)'),
    answer_status LowCardinality(String) MATERIALIZED
        if(JSONType(raw, 'status') = 'String', JSONExtractString(raw, 'status'), ''),

    -- Finding one trace or one request reads only the granules that may hold it.
    INDEX trace_id_bloom trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX request_id_bloom request_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = MergeTree
-- One partition per day: a day's queries read one partition, and TTL drops whole days.
PARTITION BY toDate(timestamp)
-- The documented queries filter on level (errors) or event (access lines, feedback) over a
-- time range. Lines of one level and event are stored together, in time order.
ORDER BY (service, level, event, timestamp)
-- 30 days, like the log retention in Loki. Older days are dropped as whole parts.
TTL toDateTime(timestamp) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

-- One row per assistant turn: the lines of
--   chatlens export --dataset conversation_metrics --format json
-- loaded as they are (FORMAT JSONEachRow). The columns and their names are those of the
-- export, so every field of a line has a column.
--
-- ReplacingMergeTree, because exports are taken by date range and two ranges may overlap.
-- A turn loaded twice has the same sort key (it includes `id`) and is kept once after
-- merges. Queries that must count exactly read the table with FINAL.
CREATE TABLE IF NOT EXISTS chatlens.conversation_metrics
(
    -- ISO 8601 with microseconds and an offset (`2026-11-23T21:35:07.675794+00:00`):
    -- insert with date_time_input_format = 'best_effort'.
    timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD),
    conversation_id UUID,
    message_id UUID,
    user_id UUID,
    project_id LowCardinality(String),
    platform LowCardinality(String),
    external_user_id Nullable(String),
    model LowCardinality(Nullable(String)),
    intent LowCardinality(Nullable(String)),
    confidence Nullable(Float64),
    response_time_ms Float64,
    ttft_ms Nullable(Float64),
    prompt_tokens UInt32,
    completion_tokens UInt32,
    tokens_used UInt32,
    -- Numeric(14, 8) in chatlens. The export writes it as a decimal string ("0E-8",
    -- "0.00012345"), which Decimal reads exactly.
    cost_usd Decimal(14, 8),
    -- In the export, but chatlens does not fill it: CSAT is kept with the feedback.
    satisfaction_score Nullable(UInt8),
    resolved Bool,
    escalated Bool,
    -- `complete`, `incomplete` (stream cut off) or `error`.
    status LowCardinality(String),
    id UUID
)
ENGINE = ReplacingMergeTree
-- One partition per month: reports read a few months, and TTL drops whole months.
PARTITION BY toYYYYMM(timestamp)
-- Reports are per project over a time range.
ORDER BY (project_id, timestamp, id)
-- Two years of turns.
TTL toDateTime(timestamp) + INTERVAL 2 YEAR
SETTINGS ttl_only_drop_parts = 1;
