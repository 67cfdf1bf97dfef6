-- Countries' calendars of unusual days (docs/forecasting.md, "Holidays and promotions"): an
-- operator loads each country's public holidays once, and every merchant whose country is set
-- gets them on top of its own calendar (for all its SKUs). Codes are ISO 3166-1 alpha-2.
CREATE TABLE country_calendar (
    country  text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    day      date NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('holiday', 'promotion')),
    name     text,
    PRIMARY KEY (country, day, kind)
);
ALTER TABLE merchants ADD COLUMN country text CHECK (country ~ '^[A-Z]{2}$');
