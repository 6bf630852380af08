-- v_project_costs: spend per integration, day and project (OpenAI project, Anthropic workspace)
-- with the project's name beside its id (the id itself until a name is known) (view).
-- Built from: fct_costs, dim_projects.
-- depends_on: schema
CREATE OR REPLACE VIEW v_project_costs AS
SELECT
    f.integration_id,
    f.provider,
    f.cost_date,
    f.project_id,
    coalesce(p.name, f.project_id, '(no project)') AS project_name,
    sum(f.amount_usd) AS amount_usd
FROM fct_costs AS f
LEFT JOIN dim_projects AS p
    ON p.integration_id = f.integration_id AND p.project_id = f.project_id
GROUP BY ALL;
