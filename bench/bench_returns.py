from asynca3c.bench_returns import main

raise SystemExit(main())
