// Initiates the replica set MONGO_REPLICA_SET with MONGO_MEMBERS ("host:port,host:port").
// Run by mongosh against the first member; on an initiated set it only reports the state.
const setName = process.env.MONGO_REPLICA_SET;
const members = process.env.MONGO_MEMBERS.split(",").map((host, index) => ({ _id: index, host }));
try {
  const status = rs.status();
  print(`replica set ${status.set} already initiated with ${status.members.length} members`);
} catch (error) {
  if (error.codeName !== "NotYetInitialized") {
    throw error;
  }
  rs.initiate({ _id: setName, members });
  print(`initiated replica set ${setName} with ${members.length} members`);
}
