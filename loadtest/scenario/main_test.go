package scenario

import (
	"context"
	"os"
	"testing"
)

var testContext = context.Background()

func TestMain(m *testing.M) { os.Exit(m.Run()) }
