-- The postgresql schema of a store created at commit 78d9738 (engine/tables.py then).
-- Frozen by: python -m tests.engine.migrations_legacy.freeze 78d9738 before_context_json
CREATE TABLE arm_stats (
	experiment VARCHAR(128) NOT NULL, 
	phase INTEGER NOT NULL, 
	arm VARCHAR(128) NOT NULL, 
	exposures INTEGER NOT NULL, 
	conversions INTEGER NOT NULL, 
	total FLOAT NOT NULL, 
	total_sq FLOAT NOT NULL, 
	PRIMARY KEY (experiment, phase, arm)
);
CREATE TABLE assignments (
	experiment VARCHAR(128) NOT NULL, 
	phase INTEGER NOT NULL, 
	unit VARCHAR(256) NOT NULL, 
	arm VARCHAR(128) NOT NULL, 
	propensity FLOAT NOT NULL, 
	ts TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (experiment, phase, unit)
);
CREATE TABLE decisions (
	decision_id VARCHAR(64) NOT NULL, 
	experiment VARCHAR(128) NOT NULL, 
	version INTEGER NOT NULL, 
	phase INTEGER NOT NULL, 
	unit VARCHAR(256) NOT NULL, 
	arm VARCHAR(128) NOT NULL, 
	channel VARCHAR(16) NOT NULL, 
	bucket FLOAT, 
	propensity FLOAT, 
	reason VARCHAR(16) NOT NULL, 
	ts TIMESTAMP WITH TIME ZONE NOT NULL, 
	converted BOOLEAN NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (decision_id)
);
CREATE INDEX ix_decisions_timeline ON decisions (experiment, phase, ts);
CREATE INDEX ix_decisions_unit ON decisions (experiment, unit, ts);
CREATE TABLE events (
	event_id VARCHAR(256) NOT NULL, 
	type VARCHAR(16) NOT NULL, 
	experiment VARCHAR(128) NOT NULL, 
	unit VARCHAR(256), 
	decision_id VARCHAR(64), 
	arm VARCHAR(128), 
	value FLOAT, 
	ts TIMESTAMP WITH TIME ZONE NOT NULL, 
	received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (event_id)
);
CREATE INDEX ix_events_experiment ON events (experiment);
CREATE TABLE experiment_versions (
	key VARCHAR(128) NOT NULL, 
	version INTEGER NOT NULL, 
	spec_json TEXT NOT NULL, 
	applied_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (key, version)
);
CREATE TABLE experiments (
	key VARCHAR(128) NOT NULL, 
	version INTEGER NOT NULL, 
	phase INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	spec_json TEXT NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (key)
);
