def test_job_on_the_emulator(longrun_local, tmp_path):
    fn = longrun_local.deploy(
        "app.py:handler", timeout_s=2, max_hops=3, env={"LONGRUN_MIN_MARGIN_MS": "600"}
    )
    run_id = longrun_local.invoke(fn, {"records": 400})
    report = longrun_local.wait(timeout=60)
    assert report.run(run_id).status == "completed"
