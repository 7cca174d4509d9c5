package frontend

import "io/fs"

// moduleFiles are the module files written into every build.
// Temporary stand-in: nil until the root package's embedded Files lands
// (a flake without a body needs none of them).
var moduleFiles fs.FS
