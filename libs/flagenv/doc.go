// Package flagenv fills a flag.FlagSet from the command line and the
// environment, the same way for every ekaci binary.
//
// Each flag -nats-url may also be given as the variable EKACI_NATS_URL (the
// prefix, then the flag name upper-cased with every character that is not a
// letter or digit turned into "_"). A value is taken from, in order:
//
//  1. the command line,
//  2. the environment,
//  3. the flag's default.
//
// An empty variable counts as unset, so `EKACI_NATS_URL=` in a compose file
// keeps the default instead of replacing it with nothing. Variables that
// name no flag are ignored: ekaci's binaries share one environment.
//
// A flag marked with Secret may instead come from a file named by
// EKACI_<NAME>_FILE (a mounted Kubernetes or systemd secret), trailing
// newlines trimmed; setting both EKACI_<NAME> and EKACI_<NAME>_FILE is an
// error. Errors about secrets never include the secret.
package flagenv
