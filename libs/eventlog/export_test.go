package eventlog

// LeaderAhead exposes Load's question to the stream's leader to the
// external tests.
var LeaderAhead = (*Log).leaderAhead
