from robotcam.cli import main

raise SystemExit(main())
