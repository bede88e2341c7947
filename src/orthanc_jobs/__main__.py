from orthanc_jobs.cli import main

main()
