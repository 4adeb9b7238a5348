-- central's database as the release before versioned migrations made it: each module's
-- CREATE statements, verbatim (central/*.py and registry/divisions.py at that release).
-- central/store.py
CREATE TABLE IF NOT EXISTS nodes(
  node_id TEXT PRIMARY KEY, village TEXT NOT NULL, county TEXT NOT NULL,
  state TEXT NOT NULL, state_since REAL NOT NULL, state_reason TEXT NOT NULL,
  boot_id TEXT, birth_seq INTEGER NOT NULL DEFAULT 0,
  health_interval_s REAL NOT NULL, sw_version TEXT NOT NULL DEFAULT '',
  first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  last_health TEXT);
CREATE INDEX IF NOT EXISTS nodes_village ON nodes(village);
CREATE INDEX IF NOT EXISTS nodes_county ON nodes(county);
CREATE TABLE IF NOT EXISTS state_history(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
  state TEXT NOT NULL, start REAL NOT NULL, end REAL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS state_history_node ON state_history(node_id, start);
CREATE INDEX IF NOT EXISTS state_history_open ON state_history(node_id) WHERE end IS NULL;
CREATE TABLE IF NOT EXISTS health(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, ts REAL NOT NULL,
  recv_ts REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_node ON health(node_id, id);
CREATE TABLE IF NOT EXISTS devices(node_id TEXT NOT NULL, device_id TEXT NOT NULL,
  kind TEXT NOT NULL, state TEXT NOT NULL, name TEXT, ts REAL NOT NULL,
  detail TEXT NOT NULL DEFAULT '{}', removed INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(node_id, device_id));
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
  village TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
  recv_ts REAL NOT NULL, priority TEXT NOT NULL, kind TEXT NOT NULL, device TEXT,
  data TEXT NOT NULL, UNIQUE(node_id, boot_id, seq));
CREATE INDEX IF NOT EXISTS events_node_ts ON events(node_id, ts);
CREATE INDEX IF NOT EXISTS events_village_ts ON events(village, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS gaps(node_id TEXT NOT NULL, boot_id TEXT NOT NULL,
  first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, detected REAL NOT NULL);
CREATE INDEX IF NOT EXISTS gaps_node ON gaps(node_id, boot_id);
-- central/accounts.py
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, role TEXT NOT NULL, scope TEXT NOT NULL,
  password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
  changed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL,
  created REAL NOT NULL, last_used REAL NOT NULL, expires REAL NOT NULL, address TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
-- central/audit.py
CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY, ts REAL NOT NULL, user TEXT,
  role TEXT, address TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
  outcome TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user, ts);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, ts);
-- central/tokens.py
CREATE TABLE IF NOT EXISTS enrol_tokens(
  token_sha256 TEXT PRIMARY KEY,
  target TEXT NOT NULL,          -- a node id, or a 12-digit village code
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  used_at REAL,
  used_by TEXT                   -- the node id enrolled with it
);
-- central/history.py
CREATE TABLE IF NOT EXISTS coverage_daily(day TEXT NOT NULL, code TEXT NOT NULL,
  villages INTEGER NOT NULL, provisioned INTEGER NOT NULL, covered INTEGER NOT NULL,
  taken REAL NOT NULL, source TEXT NOT NULL, PRIMARY KEY(code, day));
-- central/alarms.py
CREATE TABLE IF NOT EXISTS alarm_acks(event_id INTEGER PRIMARY KEY, acked_by TEXT NOT NULL,
  acked_at REAL NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS alarm_closes(event_id INTEGER PRIMARY KEY, closed_by TEXT NOT NULL,
  closed_at REAL NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_alarm ON events(ts, id) WHERE priority = 'alarm';
-- central/commissioning.py
CREATE TABLE IF NOT EXISTS commissioning_reports(
  id INTEGER PRIMARY KEY,
  node_id TEXT NOT NULL,
  uploaded_at REAL NOT NULL,
  ok INTEGER NOT NULL,
  technician TEXT NOT NULL DEFAULT '',
  report TEXT NOT NULL            -- the JSON as uploaded (validated)
);
CREATE INDEX IF NOT EXISTS commissioning_by_node ON commissioning_reports(node_id, id);
-- central/alerting.py
CREATE TABLE IF NOT EXISTS alert_rules(id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL,
  updated REAL NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts(id INTEGER PRIMARY KEY, rule TEXT NOT NULL, key TEXT NOT NULL,
  kind TEXT NOT NULL, severity TEXT NOT NULL, labels TEXT NOT NULL, zh TEXT NOT NULL,
  en TEXT NOT NULL, value REAL NOT NULL, since REAL NOT NULL, fired REAL NOT NULL, resolved REAL);
CREATE INDEX IF NOT EXISTS alerts_firing ON alerts(rule, key) WHERE resolved IS NULL;
-- central/meetings.py
CREATE TABLE IF NOT EXISTS meetings(session TEXT PRIMARY KEY, node TEXT NOT NULL,
  village TEXT NOT NULL, camera TEXT, user TEXT, started REAL NOT NULL, answered REAL,
  ended REAL, end_reason TEXT, detail TEXT NOT NULL DEFAULT '', stats TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS meetings_village ON meetings(village, started);
-- central/snapshots.py
CREATE TABLE IF NOT EXISTS snapshots(id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
  village TEXT NOT NULL, alarm_boot_id TEXT NOT NULL, alarm_seq INTEGER NOT NULL,
  camera TEXT NOT NULL, zone INTEGER NOT NULL, taken_ts REAL NOT NULL, recv_ts REAL NOT NULL,
  width INTEGER NOT NULL, height INTEGER NOT NULL, jpeg BLOB NOT NULL,
  UNIQUE(node_id, alarm_boot_id, alarm_seq, camera));
-- registry/divisions.py
CREATE TABLE IF NOT EXISTS units(
  code TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  level INTEGER NOT NULL,
  parent TEXT,
  retired INTEGER NOT NULL DEFAULT 0   -- 1: absent from the imported edition, kept for bindings
);
CREATE TABLE IF NOT EXISTS registry_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- central/tokens.py, its _MIGRATIONS
ALTER TABLE enrol_tokens ADD COLUMN revoked_at REAL;
