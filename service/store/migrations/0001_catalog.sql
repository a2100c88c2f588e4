-- Sellers, their API keys, products, commission rates and marketing codes.
CREATE TABLE sellers (
    seller_id          text PRIMARY KEY,
    name               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'frozen', 'under_review')),
    verified           boolean NOT NULL,
    affiliate_enabled  boolean NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is kept: keys are 256-bit random, so no slow hash is needed.
CREATE TABLE seller_keys (
    key_hash    bytea PRIMARY KEY,
    seller_id   text NOT NULL REFERENCES sellers (seller_id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    product_id  text PRIMARY KEY,
    seller_id   text NOT NULL REFERENCES sellers (seller_id),
    url         text NOT NULL,
    category    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('listed', 'delisted')),
    stock       integer NOT NULL CHECK (stock >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_seller ON products (seller_id);

CREATE TABLE commission_rates (
    category    text PRIMARY KEY,
    rate        numeric(6, 5) NOT NULL CHECK (rate >= 0 AND rate <= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE codes (
    code          text PRIMARY KEY,
    seller_id     text NOT NULL REFERENCES sellers (seller_id),
    product_id    text NOT NULL REFERENCES products (product_id),
    utm_source    text NOT NULL,
    utm_medium    text NOT NULL,
    utm_campaign  text NOT NULL,
    utm_content   text NOT NULL,
    utm_term      text,
    channel       text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The same seller, product and UTM values are one code.
CREATE UNIQUE INDEX codes_identity ON codes
    (seller_id, product_id, utm_source, utm_medium, utm_campaign, utm_content, coalesce(utm_term, ''));
-- Newest-first listing, with keyset pagination on (created_at, code).
CREATE INDEX codes_seller_newest ON codes (seller_id, created_at DESC, code DESC);
CREATE INDEX codes_product ON codes (product_id);
