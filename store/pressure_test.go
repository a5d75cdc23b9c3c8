package store

import (
	"testing"
	"time"
)

func TestIntakePressure(t *testing.T) {
	t.Parallel()
	var nilPressure *IntakePressure
	nilPressure.note(100)
	if nilPressure.Busy() {
		t.Error("a nil pressure is never busy")
	}
	p := &IntakePressure{}
	p.note(pressureBatch - 1)
	if p.Busy() {
		t.Error("a batch smaller than pressureBatch marked intake busy")
	}
	p.note(pressureBatch)
	if !p.Busy() {
		t.Error("a queueing batch did not mark intake busy")
	}
	time.Sleep(pressureWindow + 50*time.Millisecond)
	if p.Busy() {
		t.Error("intake still busy after the window passed")
	}
}
