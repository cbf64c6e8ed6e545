// Package ctl is ekactl, the command line of the admin API: tables by
// default, -o json for scripts, colours only on a terminal and never with
// NO_COLOR set, and a non-zero exit status with the server's message when
// a call fails. It finds the server from --server, EKACI_SERVER, or the
// all-in-one's default socket.
package ctl
