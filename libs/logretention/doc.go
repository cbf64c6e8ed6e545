// Package logretention prunes the build logs a builder keeps under its log
// directory (<dir>/<drv>/<attempt>.log.zst, <drv> the derivation's hash
// id): logs older than a maximum age go, and while the logs together
// exceed a byte budget the oldest go first. Defaults: 30 days and 20 GiB.
//
// It never deletes a log being written. A builder writes each log through
// a file it holds open for the whole build, so a log any process on this
// machine holds open (as /proc/<pid>/fd shows) is kept, whatever its age:
// a build that prints nothing for an hour writes nothing to its file
// either. A log modified within the grace period (10 minutes) is kept too,
// which covers one opened between the scan and the deletion (opening a
// log truncates it, which sets its modification time), and each file is
// checked again right before it is removed. Without /proc a sweep deletes
// nothing and says why. Only files named *.log.zst one directory below
// the log directory are considered; empty derivation directories go once
// they have been empty for the grace period.
package logretention
