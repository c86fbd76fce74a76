// Creates the application user `netsec` (readWrite on the `netsec` database only), so the
// pipeline, the seed job and the serving prediction log never hold the root credentials.
// The mongo image runs /docker-entrypoint-initdb.d/*.js with mongosh once, on an empty volume.
const password = process.env.NETSEC_MONGO_PASSWORD;
if (!password) {
  throw new Error("NETSEC_MONGO_PASSWORD must be set (see .env.example)");
}
db.getSiblingDB("netsec").createUser({
  user: "netsec",
  pwd: password,
  roles: [{ role: "readWrite", db: "netsec" }],
});
