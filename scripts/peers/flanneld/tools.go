//go:build tools

// Keeps flanneld's main package in this module's requirements (go mod tidy).
package tools

import _ "github.com/flannel-io/flannel"
