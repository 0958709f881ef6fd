package fdlimit

import "testing"

func TestSplit(t *testing.T) {
	tests := []struct {
		limit uint64
		want  int
		out   Budgets
	}{
		{0, 1024, Budgets{Cluster: 1024}},
		{1024, 1024, Budgets{Limit: 1024, Cluster: 256, HTTP: 512, Admin: 64}},
		{1 << 20, 1024, Budgets{Limit: 1 << 20, Cluster: 1024, HTTP: 1 << 19, Admin: 64}},
		{256, 1024, Budgets{Limit: 256, Cluster: 64, HTTP: 128, Admin: 16}},
		{3, 1024, Budgets{Limit: 3, Cluster: 1, HTTP: 1, Admin: 1}},
	}
	for _, tc := range tests {
		got := Split(tc.limit, tc.want)
		if got != tc.out {
			t.Errorf("Split(%d, %d) = %+v, want %+v", tc.limit, tc.want, got, tc.out)
		}
		if tc.limit > 8 && uint64(got.Cluster+got.HTTP+got.Admin) >= tc.limit {
			t.Errorf("Split(%d): budgets %+v leave nothing for files", tc.limit, got)
		}
	}
	if Current() == 0 {
		t.Error("RLIMIT_NOFILE unknown on this system")
	}
}
