-- Demand forecasting: daily demand per merchant SKU, nightly runs (resumable per merchant),
-- forecasts with quantiles, stock advice and the accuracy of past forecasts.

-- Days from ordering stock to having it sellable; NULL means forecast.lead_time_days. A SKU's
-- own value wins over its merchant's.
ALTER TABLE merchants ADD COLUMN lead_time_days integer CHECK (lead_time_days BETWEEN 0 AND 365);
ALTER TABLE stock ADD COLUMN lead_time_days integer CHECK (lead_time_days BETWEEN 0 AND 365);

-- The forecast job reads a merchant's sub-orders.
CREATE INDEX sub_orders_merchant ON sub_orders (merchant_id, created_at);

-- Units sold per merchant SKU per day (UTC), zero days absent. source 'orders' rows are rebuilt
-- from order lines by every forecast run (reserved or shipped, not cancelled, rejected or out of
-- stock); source 'imported' rows are history from before souk (or `souk forecast generate`).
-- A day's demand is the sum over sources.
CREATE TABLE sku_daily_demand (
    merchant_id    text    NOT NULL REFERENCES merchants (id),
    sku            text    NOT NULL,
    day            date    NOT NULL,
    source         text    NOT NULL CHECK (source IN ('orders', 'imported')),
    units          integer NOT NULL CHECK (units >= 0),
    revenue_minor  bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, sku, day, source)
);
CREATE INDEX sku_daily_demand_day ON sku_daily_demand (merchant_id, day);

-- One run per day (run_key 'daily:<as_of>'), or per on-demand request ('manual:...').
-- as_of is the last day of history used; forecasts start the day after.
CREATE TABLE forecast_runs (
    id               bigserial PRIMARY KEY,
    run_key          text        NOT NULL UNIQUE,
    as_of            date        NOT NULL,
    horizon_days     integer     NOT NULL,
    -- running → finished (every merchant done)
    status           text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    merchants_total  integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- Each merchant's part of a run: what makes a run resumable. A merchant marked done is never
-- forecast again in that run; failed ones keep their error and are retried by the queue.
CREATE TABLE forecast_run_merchants (
    run_id       bigint      NOT NULL REFERENCES forecast_runs (id),
    merchant_id  text        NOT NULL REFERENCES merchants (id),
    -- pending → done; failed (with error) → done on a later attempt
    status       text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    skus         integer,
    at_risk      integer,
    error        text,
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (run_id, merchant_id)
);

-- One SKU's forecast from one run: the chosen model and why, the daily mean and quantiles
-- (index 0 = the day after as_of), and the model's validation error.
CREATE TABLE sku_forecasts (
    id                bigserial PRIMARY KEY,
    run_id            bigint      NOT NULL REFERENCES forecast_runs (id),
    merchant_id       text        NOT NULL REFERENCES merchants (id),
    sku               text        NOT NULL,
    as_of             date        NOT NULL,
    model             text        NOT NULL,
    -- Why a fallback was used instead of a validated model (short history, no sales); NULL otherwise.
    fallback          text,
    demand_class      text        NOT NULL,
    adi               double precision,
    cv2               double precision,
    history_days      integer     NOT NULL,
    validation_rmsse  double precision,
    dispersion        double precision NOT NULL,
    mean              double precision[] NOT NULL,
    p50               double precision[] NOT NULL,
    p90               double precision[] NOT NULL,
    p95               double precision[] NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, merchant_id, sku)
);
CREATE INDEX sku_forecasts_latest ON sku_forecasts (merchant_id, sku, as_of DESC);

-- Stock-out warning and reorder suggestion per SKU and run. at_risk: stockout_probability at or
-- above forecast.warn_probability. value_at_risk_minor: expected units short over the lead time
-- times the SKU's recent average price.
CREATE TABLE stock_advice (
    run_id                bigint      NOT NULL REFERENCES forecast_runs (id),
    merchant_id           text        NOT NULL REFERENCES merchants (id),
    sku                   text        NOT NULL,
    as_of                 date        NOT NULL,
    available             integer     NOT NULL,
    lead_time_days        integer     NOT NULL,
    lead_time_demand      double precision NOT NULL,
    stockout_probability  double precision NOT NULL,
    reorder_point         integer     NOT NULL,
    order_up_to           integer     NOT NULL,
    suggested_order       integer     NOT NULL,
    expected_shortfall    double precision NOT NULL,
    days_of_cover         integer,
    unit_price_minor      bigint,
    value_at_risk_minor   bigint      NOT NULL,
    at_risk               boolean     NOT NULL,
    PRIMARY KEY (run_id, merchant_id, sku)
);
CREATE INDEX stock_advice_at_risk ON stock_advice (merchant_id, run_id) WHERE at_risk;

-- How a forecast did once its horizon has passed: filled by the first run after that.
CREATE TABLE forecast_accuracy (
    forecast_id     bigint      PRIMARY KEY REFERENCES sku_forecasts (id),
    merchant_id     text        NOT NULL,
    sku             text        NOT NULL,
    as_of           date        NOT NULL,
    days            integer     NOT NULL,
    actual_units    double precision NOT NULL,
    forecast_units  double precision NOT NULL,
    -- NULL when the history before as_of never changed (nothing to scale by).
    rmsse           double precision,
    pinball_p90     double precision,
    coverage_p90    double precision NOT NULL,
    evaluated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forecast_accuracy_merchant ON forecast_accuracy (merchant_id, as_of);
